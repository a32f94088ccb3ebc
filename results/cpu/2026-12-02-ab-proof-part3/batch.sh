#!/usr/bin/env bash
# issue 14's remaining proof, on a quiet machine, one thing at a time
set -u
PY=/work/main/.venv/bin/python
OUT=/work/main/results/cpu/2026-12-02-ab-proof-part3
mkdir -p $OUT
log() { echo "$(date -u +%H:%M:%S) $*" >> $OUT/batch.log; }
log start
# 1. gates of the proof: +15%, +5%, +5% in torch only, +5% in keras-tensorflow only
cd /work/wt-proof4
log "proof gates"
$PY tests/ab_proof.py --runs 1 --kinds 0.15,0.05@torch,0.05,0.05@keras-tensorflow --base HEAD --out $OUT/gates > $OUT/gates.log 2>&1
log "proof gates done"
# 2. the real change against its parent, the fixed gate (twice)
cd /work/wt-real2
for i in 1 2; do
  log "real change $i"
  $PY -m bench gate --ab HEAD~1 --ab-out $OUT/real-change-$i > $OUT/real-change-$i.log 2>&1
  echo "exit $?" >> $OUT/real-change-$i.log
done
# 3. A/A: the duet schedule against the interleaved one, in the gate's rows and rounds
cd /work/wt-proof4
for schedule in duet interleaved; do
  log "aa $schedule"
  $PY -m bench compare --arms . . --tasks mnist_cnn --train-limit 12800 --pairs 4 \
    --round-seconds 8 --schedule $schedule --out $OUT/aa-$schedule > $OUT/aa-$schedule.log 2>&1
  echo "exit $?" >> $OUT/aa-$schedule.log
done
log "compare done"
# 4. the harness against bare loops on the LSTM cells issue 14 named (ABBA blocks of fresh processes)
cd /work/wt-proof4
log "overhead sst2_lstm compiled"
$PY tests/overhead.py --tasks sst2_lstm --backends torch,jax --modes compiled --blocks 3 --out $OUT/overhead-sst2-lstm > $OUT/overhead.log 2>&1
log "all done"
