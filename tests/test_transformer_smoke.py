"""A smoke run of every transformer task on every installed backend and mode (slow).

    .venv/bin/python -m pytest tests/test_transformer_smoke.py -m slow

One `bench run` of the whole matrix on synthetic data (a few steps, one epoch): every row is
`ok`, or `skipped` with the reason the backend gives for a mode it lacks on a cpu (torch's and
Keras-on-torch's fused mode). Each cell is a fresh worker process, so this takes minutes.
"""

import pytest
from test_cli import bench

from backends import BACKENDS, missing_modules
from bench.layers import model_uses_padding_mask
from bench.results import read_rows
from bench.tasks import TASKS

TRANSFORMER_TASKS = sorted(n for n, t in TASKS.items() if model_uses_padding_mask(t.layers))
INSTALLED = [name for name in BACKENDS if not missing_modules(name)]
MODES = ("default", "eager", "compiled", "fused")
# the modes a backend lacks on a cpu, and the words its `skipped` row gives as the reason
SKIPPED_ON_CPU = {
    ("torch", "fused"): "no CUDA graphs on cpu",
    ("keras-torch", "fused"): "steps_per_execution",
}
SMOKE = ["--data", "synthetic", "--train-limit", "192", "--test-limit", "64", "--epochs", "1"]
SMOKE += ["--window-steps", "1", "--warmup-windows", "1", "--threads", "2"]


@pytest.mark.slow
def test_every_transformer_task_runs_on_every_backend_and_mode(tmp_path):
    assert TRANSFORMER_TASKS == ["imdb_transformer", "sst2_transformer"]
    result = bench(
        "run", "--tasks", ",".join(TRANSFORMER_TASKS), "--backends", ",".join(INSTALLED),
        "--mode", ",".join(MODES), *SMOKE, "--out", str(tmp_path), "--run-id", "smoke",
        timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path / "smoke" / "results.csv")
    # `default` resolves to one of the others, so a backend runs its default mode twice
    assert len(rows) == len(TRANSFORMER_TASKS) * len(INSTALLED) * len(MODES)
    failures = []
    for row in rows:
        reason = SKIPPED_ON_CPU.get((row["backend"], row["mode"]))
        expected = "skipped" if reason else "ok"
        if row["status"] != expected or (reason and reason not in row["error"]):
            failures.append(f"{row['task']} {row['backend']} {row['mode']}: {row['status']} "
                            f"{row['error'][-300:]}")  # fmt: skip
        elif expected == "ok" and not float(row["samples_per_s"]) > 0:
            failures.append(f"{row['task']} {row['backend']} {row['mode']}: no throughput")
    assert not failures, "\n".join(failures)
