#!/bin/bash
# Resumed at d62293a (<worktree>: the output head on the answer positions only, the same v* to the last bit) after the cases already in the journal.
# The subject-neuron edit at the default context fit (10) and its random control on Gemma 3: the same 12 test cases as
# results/edit/bench-subject-gemma3-270m (--sample 12, seed 0). Unedited rows reused from that run. Journaled: rerun to resume.
set -x
cd <worktree>
source <repo>/.venv/bin/activate
export PYTHONPATH=<worktree> KNEURON_DATA=<data>
git rev-parse HEAD
lscpu | grep 'Model name'
date
cd <out>
OUT=bench-subject-context-gemma3-270m
mkdir -p $OUT
[ -f $OUT/journal.jsonl ] || grep '"method":"unedited"' <repo>/results/edit/bench-subject-gemma3-270m/journal.jsonl > $OUT/journal.jsonl
time kneuron --threads 1 edit bench --model gemma3-270m --cases cases-gemma3-270m.jsonl --split test --sample 12 --methods kn_subject,subject_random --out $OUT
date
