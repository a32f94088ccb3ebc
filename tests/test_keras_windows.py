"""Keras' timed windows time the steps alone (backends/keras_windows.py): one fit per epoch,
started outside the windows; an error inside fit reaches run_steps; short epochs get steady
windows in every mode.

Keras fixes its backend per process, so each Keras backend is probed once, in a fresh process
with the worker's environment: this file run as a script is that probe,

    python tests/test_keras_windows.py keras-jax OUT.json

and the tests below check what it saved. A backend whose framework is not installed is skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from reference import THREADS, tiny_dataset  # noqa: E402

from backends import Unsupported, create_backend, load_backend_class  # noqa: E402
from bench import worker  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.init import epoch_permutation, initial_weights  # noqa: E402
from bench.tasks import get_task  # noqa: E402

KERAS_BACKENDS = {"keras-tensorflow": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
MODES = ("default", "eager", "compiled", "fused")
# the probes' model: what they check is the windows around the steps, not the model; the MLP's
# steps and compilations cost a fraction of the CNN's (the default test run's time)
TASK = "mnist_mlp"
SLOW_START_S = 2.5  # the start-up a slowed fit takes before its first step
STEPS, WINDOW = 8, 2  # the small probes' epoch and window (steps)
FAILING_CALL = 4  # the train-function call that raises, in the middle of the epoch

# ---------------------------------------------------------------------------------------------
# The probe: runs in a process of its own, one per Keras backend.


def make(backend_name: str, **overrides):
    task = get_task(TASK)
    settings = {"task": TASK, "backend": backend_name, "threads": THREADS, "window_steps": WINDOW}
    backend = create_backend(RunConfig(**{**settings, **overrides}))
    data = tiny_dataset(task, train=task.batch_size * STEPS)
    backend.setup(initial_weights(task.layers, task.input_shape, seed=0), data)
    return backend, data


def running_fits(backend) -> int:
    """Fits started and not yet returned (parked or running); 0 once every fit has ended."""
    from backends.keras_windows import LIVE

    return sum(not epoch_fit.finished for epoch_fit in LIVE) + (backend.epoch_fit is not None)


def probe_startup(backend_name: str) -> dict:
    """fit's start-up made slow (a callback that sleeps in on_train_begin): begin_epoch takes
    it, the timed windows do not; one fit call per epoch."""
    import keras

    fit_threads = []

    class SlowStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            fit_threads.append(threading.get_ident())
            time.sleep(SLOW_START_S)

    backend, data = make(backend_name)
    fit, calls = backend.model.fit, []

    def slowed(**kwargs):
        calls.append(1)
        return fit(**{**kwargs, "callbacks": [*kwargs["callbacks"], SlowStart()]})

    backend.model.fit = slowed
    epochs = []
    for epoch in range(2):
        clock = time.perf_counter()
        backend.begin_epoch(epoch_permutation(0, epoch, len(data.y_train)))
        begin_s = time.perf_counter() - clock
        windows = [
            worker.timed_window(backend, first, WINDOW)[1] for first in range(0, STEPS, WINDOW)
        ]
        epochs.append({"begin_s": begin_s, "windows_s": windows, "fit_calls": len(calls)})
    keras_thread = backend.keras_thread.thread.ident
    return {
        "epochs": epochs,
        "running_fits_after": running_fits(backend),
        "fits_on_the_keras_thread": [ident == keras_thread for ident in fit_threads],
        "keras_thread_is_main": keras_thread == threading.main_thread().ident,
    }


def probe_failure(backend_name: str) -> dict:
    """The train function raises at its FAILING_CALL-th call, mid-epoch: run_steps raises it
    (no hang), fit's thread is gone, and the next epoch trains. And a fit that fails before its
    first step fails begin_epoch."""
    import keras

    backend, data = make(backend_name)
    model = backend.model
    model.make_train_function()  # fit keeps a train function that is already made
    train_function, calls = model.train_function, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == FAILING_CALL:
            raise RuntimeError(f"injected failure in call {len(calls)}")
        return train_function(*args, **kwargs)

    model.train_function = failing
    backend.begin_epoch(epoch_permutation(0, 0, len(data.y_train)))
    result: dict = {"losses": [], "error": None}
    clock = time.perf_counter()
    try:
        for first in range(0, STEPS, WINDOW):
            result["losses"].append(backend.run_steps(first, WINDOW))
    except RuntimeError as error:
        result["error"] = str(error)
    result["seconds_to_error"] = time.perf_counter() - clock
    result["running_fits_after_error"] = running_fits(backend)
    model.train_function = train_function
    backend.begin_epoch(epoch_permutation(0, 1, len(data.y_train)))
    result["next_epoch"] = [backend.run_steps(first, WINDOW) for first in range(0, STEPS, WINDOW)]

    class FailsAtStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise ValueError("injected failure before the first step")

    fit = model.fit
    model.fit = lambda **kwargs: fit(
        **{**kwargs, "callbacks": [*kwargs["callbacks"], FailsAtStart()]}
    )
    try:
        backend.begin_epoch(epoch_permutation(0, 2, len(data.y_train)))
        result["start_error"] = None
    except ValueError as error:
        result["start_error"] = str(error)
    result["running_fits_at_end"] = running_fits(backend)
    return result


def probe_short_epoch(backend_name: str, out_dir: Path) -> dict:
    """Every mode through the worker's own loop on a 150-step epoch with 25-step windows (the
    default mode for two epochs: the second must compile nothing)."""
    task = get_task(TASK)
    data = dataclasses.replace(tiny_dataset(task, train=150 * task.batch_size), synthetic=True)
    worker.datasets.load = lambda *args, **kwargs: data
    compiles = []
    if backend_name == "keras-jax":
        import jax

        def listen(event: str, seconds: float, **kwargs) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                compiles.append(event)

        jax.monitoring.register_event_duration_secs_listener(listen)
    results = {}
    for mode in MODES:
        epochs = 2 if mode == "default" else 1
        config = RunConfig(
            task=TASK, backend=backend_name, mode=mode, epochs=epochs, threads=THREADS
        )
        row = worker.base_row(config)
        job = worker.Run(config, out_dir, row, worker.Progress(None))
        try:
            job.load()
        except Unsupported as error:
            results[mode] = {"unsupported": str(error)}
            continue
        job.setup()
        probe = worker.Probe()
        compiled_before = []
        for epoch in range(epochs):
            compiled_before.append(len(compiles))
            job.train_epoch(epoch, probe)
        windows = [dataclasses.asdict(window) for window in job.windows]
        results[mode] = {
            "window_steps": row["window_steps"],
            "steady_windows": row["steady_windows"],
            "windows": [(w["epoch"], w["first_step"], w["steps"], w["phase"]) for w in windows],
            "compiles": len(compiles),  # so far in the process (JAX only)
            "second_epoch_compiles": len(compiles) - compiled_before[-1] if epochs > 1 else 0,
        }
    return results


FRAMEWORK_MODULES = ("torch", "tensorflow", "jax", "jaxlib")
METADATA = ("EagerTensor._shape_tuple", "EagerTensor._datatype_enum")


def framework_call(function) -> str | None:
    """The framework a builtin (C) function or method belongs to, if any."""
    module = getattr(function, "__module__", None) or type(getattr(function, "__self__", None))
    module = module if isinstance(module, str) else getattr(module, "__module__", "")
    return module if module.split(".")[0] in FRAMEWORK_MODULES else None


def probe_main_thread(backend_name: str, out_dir: Path) -> dict:
    """The framework's C functions the main thread calls while the worker constructs, sets up,
    trains (one epoch) and evaluates the backend: all framework work is the Keras thread's."""
    task = get_task(TASK)
    data = dataclasses.replace(tiny_dataset(task, train=task.batch_size * STEPS), synthetic=False)
    worker.datasets.load = lambda *args, **kwargs: data  # "real" data: evaluate runs too
    load_backend_class(backend_name)  # its imports (the frameworks') are not what is counted
    config = RunConfig(
        task=TASK, backend=backend_name, epochs=1, window_steps=WINDOW, threads=THREADS
    )
    row = worker.base_row(config)
    job = worker.Run(config, out_dir, row, worker.Progress(None))
    called: dict[str, int] = {}

    def profile(frame, event, arg) -> None:
        if event == "c_call" and (module := framework_call(arg)):
            name = f"{module}.{getattr(arg, '__qualname__', arg)}"
            called[name] = called.get(name, 0) + 1

    sys.setprofile(profile)
    try:
        job.load()
        job.setup()
        job.evaluate(0, job.train_epoch(0, worker.Probe()))
    finally:
        sys.setprofile(None)
    return {"main_thread_calls": called, "accuracy": row["final_test_accuracy"]}


def probe(backend_name: str, out_dir: Path) -> dict:
    return {
        "main_thread": probe_main_thread(backend_name, out_dir),
        "startup": probe_startup(backend_name),
        "failure": probe_failure(backend_name),
        "short_epoch": probe_short_epoch(backend_name, out_dir),
    }


# ---------------------------------------------------------------------------------------------
# The tests: one probe process per Keras backend, shared by every test of that backend.


@pytest.fixture(scope="module", params=list(KERAS_BACKENDS))
def probed(request, tmp_path_factory) -> tuple[str, dict]:
    from bench.cell import worker_environment

    backend = request.param
    if not all(importlib.util.find_spec(m) for m in ("keras", KERAS_BACKENDS[backend])):
        pytest.skip(f"{backend} needs keras and {KERAS_BACKENDS[backend]} installed")
    folder = tmp_path_factory.mktemp("keras-windows")
    out = folder / f"{backend}.json"
    env = worker_environment(RunConfig(task="mnist_cnn", backend=backend, threads=THREADS))
    result = subprocess.run(
        [sys.executable, __file__, backend, str(out), str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return backend, json.loads(out.read_text())


def test_a_window_times_its_steps_not_fits_start_up(probed):
    """(a) fit's start-up (made 2.5 s slow) falls in begin_epoch, outside every timed window
    but the run's first (the compile); one fit call per epoch."""
    _, results = probed
    startup = results["startup"]
    for index, epoch in enumerate(startup["epochs"]):
        assert epoch["fit_calls"] == index + 1  # one fit per epoch
        assert epoch["begin_s"] >= SLOW_START_S
        windows = epoch["windows_s"][1:] if index == 0 else epoch["windows_s"]
        assert max(windows) < SLOW_START_S / 2, epoch
    assert startup["running_fits_after"] == 0  # every epoch's fit has returned
    # both fits on the backend's one thread, not the main one
    assert startup["fits_on_the_keras_thread"] == [True, True]
    assert not startup["keras_thread_is_main"]


def test_an_error_inside_a_step_reaches_run_steps(probed):
    """(b) an exception raised by a step mid-epoch is raised by that window's run_steps, fit's
    thread ends, and the next epoch trains; one raised before the first step fails
    begin_epoch."""
    _, results = probed
    failure = results["failure"]
    assert failure["error"] == f"injected failure in call {FAILING_CALL}"
    # calls 1-3 ran; a window of 2 steps per call: the first window returned, the second raised
    assert len(failure["losses"]) == (FAILING_CALL - 1) // WINDOW
    assert failure["running_fits_after_error"] == 0
    assert len(failure["next_epoch"]) == STEPS // WINDOW
    assert all(0 < loss < 10 for loss in failure["next_epoch"])
    assert failure["start_error"] == "injected failure before the first step"
    assert failure["running_fits_at_end"] == 0


def test_every_mode_gets_steady_windows_on_a_short_epoch(probed):
    """(c) 150 steps in windows of 25: window_steps is the run's own (no widening), fused
    windows are whole executions, and every mode has steady windows."""
    backend, results = probed
    for mode, result in results["short_epoch"].items():
        if "unsupported" in result:
            assert backend == "keras-torch" and mode == "fused", result
            continue
        assert result["window_steps"] == 25, (mode, result)
        first = result["windows"][0]
        assert first[2] == (25 if mode == "fused" else 1), (mode, first)
        assert result["steady_windows"] >= 3, (mode, result["windows"])
        assert all(steps in (1, 24, 25) for _, _, steps, _ in result["windows"]), result


def test_the_main_thread_runs_no_framework_op(probed):
    """Set-up, training and evaluation all run on the backend's Keras thread: with torch, ops
    on the main thread too would make a second OpenMP team, another spin-wait regime than the
    torch backend's (backends/keras_windows.py)."""
    _, results = probed
    main_thread = results["main_thread"]
    assert main_thread["accuracy"] is not None  # evaluation ran
    calls = main_thread["main_thread_calls"]
    # only a tensor's shape and dtype, read for data_resident_bytes (TensorFlow's are C methods)
    assert all(name.endswith(METADATA) for name in calls), calls


def test_a_later_epoch_compiles_nothing_on_jax(probed):
    """Keras' metric reset at a fit's start leaves JAX arrays uncommitted, a new jax.jit
    signature: the model commits them, so epoch 2's windows are steady and compile nothing."""
    backend, results = probed
    if backend != "keras-jax":
        pytest.skip("a JAX compilation count")
    default = results["short_epoch"]["default"]
    assert default["compiles"] > 0  # the count sees JAX's compilations
    assert default["second_epoch_compiles"] == 0
    assert [w for w in default["windows"] if w[0] == 1 and w[3] == "steady"]


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(probe(sys.argv[1], Path(sys.argv[3])), indent=1))
