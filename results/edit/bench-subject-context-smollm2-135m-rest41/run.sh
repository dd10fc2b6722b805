#!/bin/bash
# Resumed at d62293a (<worktree>: the output head on the answer positions only, the same v* to the last bit) after the cases already in the journal.
# The subject-neuron edit at the default context fit (10, chosen on the tune split) and its random-neuron control, on the
# other 41 test cases of cases-smollm2-135m-per30.jsonl (those bench-smollm2-135m-per30 measured for kn and ROME, and
# bench-subject-context-smollm2-135m-per30 did not). Journaled: rerun to resume.
set -x
cd <worktree>
source <repo>/.venv/bin/activate
export PYTHONPATH=<worktree> KNEURON_DATA=<data>
git rev-parse HEAD
lscpu | grep 'Model name'
date
cd <out>
OUT=bench-subject-context-smollm2-135m-rest41
time kneuron --threads 1 edit bench --model smollm2-135m --cases cases-per30-rest41.jsonl --split test --methods kn_subject,subject_random --out $OUT
date
