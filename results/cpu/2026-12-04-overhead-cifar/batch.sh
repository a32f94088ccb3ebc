#!/bin/bash
# The overhead check on the CIFAR-10 CNN, every backend and mode, 1 thread, two halves at once,
# each pinned to one core (taskset), from a frozen worktree of the commit named in README.md.
set -u
OUT=/work/main/results/cpu/2026-12-04-overhead-cifar
cd /work/oh
export BENCH_DATA_DIR=/work/shared/datasets PYTHONPATH=/work/oh
PY=/work/main/.venv/bin/python
taskset -c 0 $PY tests/overhead.py --tasks cifar10_cnn --backends torch,jax,keras-torch \
  --blocks 3 --seed 1 --threads 1 --out $OUT/core0 > $OUT/core0.log 2>&1 &
taskset -c 1 $PY tests/overhead.py --tasks cifar10_cnn --backends keras-tensorflow,keras-jax \
  --blocks 3 --seed 2 --threads 1 --out $OUT/core1 > $OUT/core1.log 2>&1 &
wait
