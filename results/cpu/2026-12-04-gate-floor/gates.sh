#!/bin/bash
# CI's A/B step (make gate-ab's command, the quick suite's accuracy from the fresh clone's run)
# against the base revision CI's failed run used (3216f24), from a frozen worktree of this
# session's floor commit, three times in a row, no other load.
set -u
OUT=/work/main/results/cpu/2026-12-04-gate-floor/gates
cd /work/gf
export BENCH_DATA_DIR=/work/shared/datasets
for i in 1 2 3; do
  /work/main/.venv/bin/python -m bench gate --ab 3216f24 --baseline results/baselines/cpu-quick.csv \
    --current "$CURRENT" --ab-out "$OUT/run$i" > "$OUT/run$i.log" 2>&1
  echo "run $i exit $?" >> "$OUT/exits.txt"
done
