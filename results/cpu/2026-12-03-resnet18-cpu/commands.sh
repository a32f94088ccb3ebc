#!/usr/bin/env bash
# The runs of this folder (2026-12-03, commit 291f975, 2-vCPU AMD EPYC KVM, no GPU), one
# `bench run` per list below, each pinned to one core with taskset, two at a time (one per core):
# ResNet-18 on CIFAR-10's synthetic twin, batch 128, 22 steps (2,816 samples, one epoch) in
# 2-step windows after one warm-up window, evaluation on 128 samples, 1 thread.
#   core 0: torch, jax (eager, compiled, fused), then keras-tensorflow default
#   core 1: keras-tensorflow, keras-torch (eager, compiled, fused), then keras-jax (the same
#           three modes; moved here from core 0's list once core 1 was free: core 0's runner was
#           stopped after its sixth row), then keras-torch and keras-jax default
# The *.log files are each runner's printed progress.
set -eu
cd "$(dirname "$0")/../../.."
export BENCH_DATA_DIR=${BENCH_DATA_DIR:-../shared/datasets} TF_CPP_MIN_LOG_LEVEL=2
common="--tasks cifar10_resnet18 --data synthetic --train-limit 2816 --test-limit 128 --epochs 1
  --window-steps 2 --warmup-windows 1 --threads 1 --timeout 1500 --out results/cpu/resnet18-rerun"
run() { taskset -c "$1" .venv/bin/python -m bench run $common --backends "$2" --mode "$3" --run-id "$4"; }
run 0 torch,jax eager,compiled,fused resnet18-core0 &
run 1 keras-tensorflow,keras-torch,keras-jax eager,compiled,fused resnet18-core1
wait
run 0 keras-tensorflow default resnet18-default-core0 &
run 1 keras-torch,keras-jax default resnet18-default-core1
wait
