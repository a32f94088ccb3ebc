"""Confined against unconfined 1-thread workers, ABBA/BAAB blocks of fresh processes.

    BENCH_DATA_DIR=... python confine_ab.py TASK BACKEND[,BACKEND...] BLOCKS TRAIN_LIMIT OUT_DIR

A (unconfined): bench.worker with bench.cell.run_cpus replaced by "no confinement", as the
worker was before 2026-12-03; B (confined): bench.worker as it is. Both with the runner's
environment (bench.cell.worker_environment), 1 thread, real data, one epoch of TRAIN_LIMIT
samples in 2-step windows. Prints one JSON line per process (step time, CPU time per step, the
cores its steady windows used: CPU seconds per wall second) and each block's confined /
unconfined step-time ratio; writes every process's line to OUT_DIR/processes.json.
"""

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from bench.cell import worker_environment  # noqa: E402
from bench.config import RunConfig  # noqa: E402

WORKER = "import runpy; runpy.run_module('bench.worker', run_name='__main__')"
UNCONFINED = "import bench.cell as c; c.run_cpus = lambda *a, **k: None; " + WORKER


def one_process(config: RunConfig, side: str, out: Path) -> dict:
    code = UNCONFINED if side == "A" else WORKER
    command = [sys.executable, "-c", code, "--config", config.to_json(), "--out", str(out)]
    env = worker_environment(config)
    subprocess.run(command, env=env, cwd=ROOT, check=False, capture_output=True)
    row = json.loads((out / "result.json").read_text())
    with open(out / "windows.csv", newline="") as handle:
        steady = [w for w in csv.DictReader(handle) if w["phase"] == "steady"]
    cpu = sum(float(w["cpu_seconds"]) for w in steady)
    wall = sum(float(w["seconds"]) for w in steady)
    return {
        "backend": config.backend,
        "side": "unconfined" if side == "A" else "confined",
        "status": row["status"],
        "step_ms": row["step_time_median_ms"],
        "cpu_ms": row["cpu_time_median_ms"],
        "cores": round(cpu / wall, 3),
    }


def main() -> None:
    task, backends, blocks = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    limit, out_dir = int(sys.argv[4]), Path(sys.argv[5])
    rows = []
    for backend in backends:
        config = RunConfig(
            task=task, backend=backend, threads=1, data="real", train_limit=limit,
            test_limit=64, epochs=1, window_steps=2, warmup_windows=2,
        )  # fmt: skip
        for block in range(blocks):
            for index, side in enumerate("ABBA" if block % 2 == 0 else "BAAB"):
                row = one_process(config, side, out_dir / f"{backend}-{block}-{index}")
                rows.append(row | {"block": block})
                print(json.dumps(rows[-1]), flush=True)
    (out_dir / "processes.json").write_text(json.dumps(rows, indent=1) + "\n")
    for backend in backends:
        ratios = []
        for block in range(blocks):
            mine = [r for r in rows if r["backend"] == backend and r["block"] == block]
            logs = {s: [math.log(r["step_ms"]) for r in mine if r["side"] == s] for s in SIDES}
            ratios.append(
                math.exp(statistics.mean(logs["confined"]) - statistics.mean(logs["unconfined"]))
            )
        print(backend, "confined / unconfined step time per block:", [round(r, 3) for r in ratios])


SIDES = ("unconfined", "confined")

if __name__ == "__main__":
    main()
