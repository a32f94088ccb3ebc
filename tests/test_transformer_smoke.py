"""A smoke run of the transformer tasks on every installed backend and mode.

    .venv/bin/python -m pytest tests/test_transformer_smoke.py -m "slow or heavy"

`bench run` on synthetic data (three steps, one epoch; IMDB's at batch 16). `slow` (CI):
sst2_transformer and imdb_transformer (the same layers over 200 positions instead of 64) in
each backend's default mode. `heavy` (make test-heavy, not in CI): sst2_transformer in every other mode of every
backend, about 5 minutes on 2 cores (torch.compile and XLA compile the model anew in every
cell). Every row is `ok`, or `skipped` with the reason the backend gives for a mode it lacks
on a cpu (torch's and Keras-on-torch's fused mode). Each cell is a fresh worker process
(compilations included).
"""

import pytest
from reference import THREADS
from test_cli import bench

from backends import BACKENDS, missing_modules
from bench.layers import model_uses_padding_mask
from bench.results import read_rows
from bench.tasks import TASKS

TRANSFORMER_TASKS = sorted(n for n, t in TASKS.items() if model_uses_padding_mask(t.layers))
INSTALLED = [name for name in BACKENDS if not missing_modules(name)]
OTHER_MODES = ("eager", "compiled", "fused")  # besides each backend's default
# the modes a backend lacks on a cpu, and the words its `skipped` row gives as the reason
SKIPPED_ON_CPU = {
    ("torch", "fused"): "no CUDA graphs on cpu",
    ("keras-torch", "fused"): "steps_per_execution",
}
SMOKE = ["--data", "synthetic", "--epochs", "1", "--window-steps", "1", "--warmup-windows", "1"]
SMOKE += ["--threads", str(THREADS)]
# three steps and an evaluation batch: of 64 texts, or of 16 for IMDB's 200-token texts (a
# batch of 64 costs about a second a step on one core in most backends)
SIZES = {"imdb_transformer": (16, 48, 16)}  # batch, train and test samples
DEFAULT_SIZE = (64, 192, 64)


def smoke_rows(tmp_path, task: str, modes: tuple[str, ...]) -> list[dict]:
    batch, train, test = SIZES.get(task, DEFAULT_SIZE)
    sizes = ["--batch-size", str(batch), "--train-limit", str(train), "--test-limit", str(test)]
    result = bench(
        "run", "--tasks", task, "--backends", ",".join(INSTALLED), "--mode", ",".join(modes),
        *SMOKE, *sizes, "--out", str(tmp_path), "--run-id", task, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path / task / "results.csv")
    assert len(rows) == len(INSTALLED) * len(modes)  # `default` resolves to another mode
    return rows


@pytest.mark.parametrize(
    ("task", "modes"),
    [
        pytest.param("sst2_transformer", ("default",), marks=pytest.mark.slow),
        pytest.param("imdb_transformer", ("default",), marks=pytest.mark.slow),
        pytest.param("sst2_transformer", OTHER_MODES, marks=pytest.mark.heavy),
    ],
)
def test_transformer_tasks_run_on_every_backend_and_mode(tmp_path, task, modes):
    assert task in TRANSFORMER_TASKS
    failures = []
    for row in smoke_rows(tmp_path, task, modes):
        reason = SKIPPED_ON_CPU.get((row["backend"], row["mode"]))
        expected = "skipped" if reason else "ok"
        if row["status"] != expected or (reason and reason not in row["error"]):
            failures.append(f"{row['task']} {row['backend']} {row['mode']}: {row['status']} "
                            f"{row['error'][-300:]}")  # fmt: skip
        elif expected == "ok" and not float(row["samples_per_s"]) > 0:
            failures.append(f"{row['task']} {row['backend']} {row['mode']}: no throughput")
    assert not failures, "\n".join(failures)
