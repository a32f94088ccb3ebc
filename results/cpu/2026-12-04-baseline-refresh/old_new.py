"""The quick suite's MNIST torch and keras-torch cells: the old baseline's code (18abc42,
2026-11-29, which has no serving worker, so `bench compare` cannot run it) against this
session's (9ae4a35), one-shot `bench run` processes alternated in ABBA/BAAB blocks, both pinned
to core 1 (taskset). Prints each block's log-ratio per cell and the geometric mean with a 95%
Student-t interval across blocks. Worktrees at /work/old and /work/gf; the venv is this
session's.

    python results/cpu/2026-12-04-baseline-refresh/old_new.py --blocks 4 --out DIR
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ARMS = {"old": "/work/old", "new": "/work/gf"}
CELLS = ["--tasks", "mnist_cnn", "--backends", "torch,keras-torch"]


def run(arm: str, name: str, out: Path) -> pd.Series:
    command = ["taskset", "-c", "1", sys.executable, "-m", "bench", "run", "--suite", "quick"]
    command += [*CELLS, "--out", str(out), "--run-id", name]
    env = dict(os.environ, PYTHONPATH=ARMS[arm])
    subprocess.run(command, cwd=ARMS[arm], env=env, check=True, capture_output=True)
    rows = pd.read_csv(out / name / "results.csv")
    print(
        f"  {name}: "
        + ", ".join(f"{b} {t:.2f} ms" for b, t in zip(rows.backend, rows.step_time_median_ms)),
        flush=True,
    )
    return rows.set_index("backend")["step_time_median_ms"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    logs: dict[str, list[float]] = {}
    for block in range(args.blocks):
        order = ["old", "new", "new", "old"] if rng.random() < 0.5 else ["new", "old", "old", "new"]
        times = {"old": [], "new": []}
        for i, arm in enumerate(order):
            times[arm].append(run(arm, f"b{block}-{i}-{arm}", args.out))
        for backend in times["old"][0].index:
            old = np.mean([math.log(t[backend]) for t in times["old"]])
            new = np.mean([math.log(t[backend]) for t in times["new"]])
            logs.setdefault(backend, []).append(new - old)
        print(
            f"block {block} {''.join(a[0].upper() for a in order)}: "
            + ", ".join(f"{b} x{math.exp(v[-1]):.3f}" for b, v in logs.items()),
            flush=True,
        )
    for backend, values in logs.items():
        mean, sem = float(np.mean(values)), float(stats.sem(values))
        low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
        print(
            f"{backend}: new/old x{math.exp(mean):.3f} [{math.exp(low):.3f}, {math.exp(high):.3f}] over {len(values)} blocks"
        )


if __name__ == "__main__":
    main()
