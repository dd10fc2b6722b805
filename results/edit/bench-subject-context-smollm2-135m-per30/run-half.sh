#!/bin/bash
# Run once with HALF replaced by a and once by b (the two processes ran at once).
# The subject-neuron edit at context_fit 10 (chosen on the tune split, results/edit/tune-subject-context-smollm2-135m/) and its random-neuron
# control (subject_random), on half HALF of the 30 test cases of results/edit/bench-subject-smollm2-135m-per30 (facts that chose nothing).
# The unedited rows are that run's (same measurement settings, deterministic). Journaled: rerun to resume.
set -x
cd <worktree>
source <repo>/.venv/bin/activate
export PYTHONPATH=<worktree> KNEURON_DATA=<data>
git rev-parse HEAD
lscpu | grep 'Model name'
date
cd <out>
OUT=half-HALF
mkdir -p $OUT
[ -f $OUT/journal.jsonl ] || python3 -c "
import json,sys
ids={json.loads(l)['case_id'] for l in open('cases-per30-sample30-HALF.jsonl') if l.strip() and not l.startswith('#')}
for l in open('<repo>/results/edit/bench-subject-smollm2-135m-per30/journal.jsonl'):
    r=json.loads(l)
    if r['method']=='unedited' and r['case_id'] in ids: sys.stdout.write(l)
" > $OUT/journal.jsonl
wc -l $OUT/journal.jsonl
time kneuron --threads 1 edit bench --model smollm2-135m --cases cases-per30-sample30-HALF.jsonl --split test --methods kn_subject,subject_random --subject-context-fit 10 --out $OUT
date
