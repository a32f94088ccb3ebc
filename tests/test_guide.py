"""docs/GUIDE.md's examples run: its code blocks fenced as ```python guide [FRAMEWORK]```,
executed in order as one script in a fresh process, add two layers (GlobalAveragePool2D,
ChannelScale) and a task that uses them at runtime; the task must have the IR's shapes, build in
every installed backend the guide covers, give logits that match a float64 numpy forward pass
to 1e-5 and train.

    python tests/test_guide.py [BACKEND ...]   run the guide's script; print what each gave

Blocks without a framework tag run in every process; a block tagged torch, jax or keras runs
only in a process that tests that framework (torch and JAX share one process; Keras fixes its
backend per process, so it gets its own, on one installed Keras backend).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends import missing_modules  # noqa: E402
from bench.cell import worker_environment  # noqa: E402
from bench.config import RunConfig  # noqa: E402

GUIDE = ROOT / "docs" / "GUIDE.md"
FENCE = re.compile(r"^```python guide(?: (\w+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKER = "GUIDE-RESULT "
KERAS_BACKENDS = ("keras-jax", "keras-torch", "keras-tensorflow")  # the first installed is run
EXPECTED_SHAPES = [
    [[28, 28, 1], [26, 26, 4]],
    [[26, 26, 4], [26, 26, 4]],
    [[26, 26, 4], [4]],
    [[4], [10]],
]
EXPECTED_PARAMS = (3 * 3 * 1 * 4 + 4) + 4 + (4 * 10 + 10)


def blocks() -> list[tuple[str | None, str]]:
    """(framework tag or None, code) of every guide block, in document order."""
    return [(match[1], match[2]) for match in FENCE.finditer(GUIDE.read_text())]


def framework_of(backend: str) -> str:
    return "keras" if backend.startswith("keras-") else backend


def script(backends: list[str]) -> str:
    """The guide's blocks for these backends' frameworks, then a line of JSON with the results."""
    frameworks = {framework_of(name) for name in backends}
    header = f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
    code = [block for tag, block in blocks() if tag is None or tag in frameworks]
    footer = (
        "import json\n"
        "result = {'shapes': [[list(i), list(o)] for i, o in SHAPES],\n"
        f"          'backends': {{name: try_backend(name) for name in {backends!r}}}}}\n"
        f"print({MARKER!r} + json.dumps(result))\n"
    )
    return "\n".join([header, *code, footer])


def run_guide(backends: list[str]) -> dict:
    """The guide's script in a fresh process with a worker's environment (threads, cpu only)."""
    config = RunConfig(task="mnist_cnn", backend=backends[0], threads=1)
    result = subprocess.run(
        [sys.executable, "-c", script(backends)],
        env=worker_environment(config),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith(MARKER))
    return json.loads(line[len(MARKER) :])


def check(backend: str, got: dict) -> None:
    assert got["params"] == EXPECTED_PARAMS, backend
    assert got["logits_relative_error"] < 1e-5, (backend, got["logits_relative_error"])
    first, second = got["losses"]
    assert first == pytest.approx(got["expected_first_loss"], rel=1e-5), backend
    assert second == second and abs(second) != float("inf"), (backend, second)
    assert got["gamma_trained"], f"{backend}: a step left ChannelScale's gamma unchanged"


def test_the_guide_has_its_blocks():
    tags = [tag for tag, _ in blocks()]
    assert tags.count(None) >= 4 and {"torch", "jax", "keras"} <= set(tags), tags
    assert "try_backend" in "".join(code for tag, code in blocks() if tag is None)


def test_the_guide_layers_build_match_numpy_and_train_in_torch_and_jax():
    backends = [name for name in ("torch", "jax") if not missing_modules(name)]
    if not backends:
        pytest.skip("neither torch nor jax is installed (pip install -e '.[all]')")
    result = run_guide(backends)
    assert result["shapes"] == EXPECTED_SHAPES
    for name in backends:
        check(name, result["backends"][name])
    if len(backends) == 2:  # the same step from the same start: the same next loss
        torch_loss, jax_loss = (result["backends"][name]["losses"][1] for name in backends)
        assert jax_loss == pytest.approx(torch_loss, rel=1e-3)


def test_the_guide_layers_build_match_numpy_and_train_in_keras():
    installed = [name for name in KERAS_BACKENDS if not missing_modules(name)]
    if not installed:
        pytest.skip("no Keras backend is installed (pip install -e '.[all]')")
    result = run_guide(installed[:1])
    check(installed[0], result["backends"][installed[0]])


if __name__ == "__main__":
    names = sys.argv[1:] or [name for name in ("torch", "jax") if not missing_modules(name)]
    print(json.dumps(run_guide(names), indent=1))
