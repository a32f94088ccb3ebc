#!/usr/bin/env bash
set -u
PY=/work/main/.venv/bin/python
OUT=/work/main/results/cpu/2026-12-02-ab-proof-part3
log() { echo "$(date -u +%H:%M:%S) $*" >> $OUT/batch.log; }
until grep -q "fresh CI done" $OUT/batch.log; do sleep 5; done
cd /work/wt-proof4
for schedule in duet interleaved; do
  log "aa $schedule (again, with --backends)"
  rm -rf $OUT/aa-$schedule
  $PY -m bench compare --arms . . --tasks mnist_cnn --backends torch,jax,keras-tensorflow,keras-jax,keras-torch \
    --train-limit 12800 --pairs 4 --round-seconds 8 --schedule $schedule --out $OUT/aa-$schedule > $OUT/aa-$schedule.log 2>&1
  echo "exit $?" >> $OUT/aa-$schedule.log
done
log "aa done"
