"""Keras' fit as the harness's timed windows: one fit call over (the rest of) an epoch, on a
thread of its own, parked at each window boundary (backends/keras_backend.py says why).

`EpochFit` starts `model.fit(...)` on the backend's `KerasThread` and returns once fit has done
its start-up (data adapter, iterator, callbacks, train-function checks) and reached the epoch's
first step: `WindowCallback.on_train_batch_begin` parks the thread there. `run(first, num)`
releases it and waits until it parks again before step first + num, where the callback first
synchronizes the device and reads the last step's loss (`sync`), or, for the epoch's last
window, until fit has returned (its wrap-up, on_train_end and JAX's state sync, falls in that
window), then reads the loss. Keras calls on_train_batch_begin synchronously in every backend's
fit loop (keras/src/backend/*/trainer.py), before the step's train function runs; the callback
defines no on_train_batch_end, which would make Keras turn each step's logs into floats (a
device sync per step) on JAX and torch.

Nothing hangs: fit's exception (an OOM, an error in a step) is kept by the thread and raised
from the `run` (or the constructor) that waits; a wait also notices a fit thread that ended
without a word. A parked fit that is no longer wanted (a new epoch, the model used for something
else mid-epoch) is ended with `close`: the callback raises `FitAbandoned` inside fit, so no
further step runs (fit's own clean-up still does: JAX puts its state back on the variables).

All of a Keras backend's framework work (its set-up, every fit, predict, the weights read back)
runs on that one long-lived thread, as a user's program runs it all on one: the caller's (the
worker's main) thread only waits. Two measured reasons:
  - Keras keeps per-thread state (keras/src/backend/common/global_state.py, a threading.local)
    and torch.compile guards on it: a new thread per epoch recompiled Keras' torch train step at
    the first steps of every epoch (two windows of 5-7 s in epoch 2 of a keras-torch `compiled`
    run, 0.1-0.5 s with one thread).
  - torch's CPU ops run in an OpenMP team per calling thread, and libgomp throttles its
    threads' spin-waiting once it manages more threads than there are CPUs. Torch ops on the
    main thread (set-up, evaluation) and on a fit thread make two teams, so keras-torch ran
    under another OpenMP regime than the torch backend's one team: a 64x32x28x28 conv on a
    loaded 2-vCPU VM took 50 ms and 18 ms CPU from a second thread against 95 ms and 37 ms
    from the main one (two threads each); from one thread alone, main or not, 70-80 ms.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import queue
import threading
import time
import weakref
from collections.abc import Callable

import keras

POLL_S = 1.0  # how often a wait checks that fit's thread is alive (no time limit on a wait)


class FitAbandoned(Exception):
    """Raised inside fit, at a window boundary, to end a fit that is no longer wanted."""


class WindowCallback(keras.callbacks.Callback):
    """Parks fit's thread before the step that begins the next window (and nothing else:
    no on_train_batch_end, see the module docstring)."""

    def __init__(self, epoch_fit: EpochFit) -> None:
        super().__init__()
        self.epoch_fit = epoch_fit

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.epoch_fit.before_step(batch)


THREAD_NAME = "keras"  # tests/gpu_check.py counts CUDA syncs on it as the steps' thread


class KerasThread:
    """One daemon thread that runs a backend's framework work, one job after another: `call`
    for a function whose result the caller waits for, `submit` for a fit (EpochFit)."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self.loop, name=THREAD_NAME, daemon=True)
            self.thread.start()
        self.jobs.put(job)

    def loop(self) -> None:
        while True:
            self.jobs.get()()  # a job keeps its own exception (EpochFit.main, call)

    def is_alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def call(self, function: Callable, *args, **kwargs):
        """`function(*args, **kwargs)` on this thread: its result, or its exception raised here.
        Never while a fit is parked on the thread (it would wait behind it)."""
        if threading.current_thread() is self.thread:
            return function(*args, **kwargs)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def job() -> None:
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - raised by the waiting caller
                future.set_exception(error)

        self.submit(job)
        while True:
            try:
                return future.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                if not self.is_alive():
                    raise RuntimeError("the Keras thread ended without finishing a call") from None


class EpochFit:
    """One `model.fit` over steps [start, end) of an epoch, parked at window boundaries.

    `fit_kwargs` are fit's data arguments for exactly those steps; `sync(model)` returns the
    last step's loss as a float with the device synchronized; in fused mode fit calls back every
    `steps_per_execution` steps, so a window must end on such a step or at `end`."""

    def __init__(
        self,
        thread: KerasThread,
        model,
        fit_kwargs: dict,
        start: int,
        end: int,
        steps_per_execution: int,
        sync: Callable[[object], float],
    ) -> None:
        self.model, self.start, self.end, self.sync = model, start, end, sync
        self.steps_per_execution = steps_per_execution
        self.condition = threading.Condition()
        self.target = start  # the step to park before next
        self.parked_at: int | None = None  # the step fit's thread waits before; None: running
        self.last_begun: int | None = None  # the first step of the latest execution fit began
        self.loss: float | None = None
        self.error: BaseException | None = None
        self.finished = False  # fit returned or raised
        self.abandon = False
        self.thread = thread
        LIVE.add(self)
        thread.submit(lambda: self.main(fit_kwargs))
        self.wait(lambda: self.parked_at == start)  # fit's start-up, outside every window
        if self.finished:
            raise RuntimeError(f"Keras' fit returned before step {start} of the epoch")

    # --- on fit's thread ----------------------------------------------------------------------

    def main(self, fit_kwargs: dict) -> None:
        try:
            callbacks = [WindowCallback(self)]
            self.model.fit(**fit_kwargs, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        except FitAbandoned:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the waiting run_steps
            self.error = error
        finally:
            with self.condition:
                self.finished = True
                self.condition.notify_all()

    def before_step(self, batch: int) -> None:
        """fit's thread, before the execution that begins at step start + batch."""
        step = self.start + batch
        self.last_begun = step
        if self.abandon:
            raise FitAbandoned
        if step != self.target:
            return
        loss = self.sync(self.model) if step > self.start else None  # the window's work done
        with self.condition:
            self.loss, self.parked_at = loss, step
            self.condition.notify_all()
            while self.target == step and not self.abandon:
                self.condition.wait()
            self.parked_at = None
        if self.abandon:
            raise FitAbandoned

    # --- on the caller's thread ---------------------------------------------------------------

    def parked_before(self, step: int) -> bool:
        return not self.finished and self.parked_at == step

    def check_window(self, first_step: int, num_steps: int) -> None:
        """In fused mode a window is whole executions: fit parks only where one begins."""
        stop = first_step + num_steps
        if stop != self.end and (stop - self.start) % self.steps_per_execution:
            raise ValueError(
                f"a fused window ends where an execution of {self.steps_per_execution} steps "
                f"ends (or at the epoch's end, step {self.end}); steps [{first_step}, {stop}) "
                "do not"
            )

    def run(self, first_step: int, num_steps: int) -> float:
        """Steps [first, first + num): release the parked fit and wait for the window's end."""
        assert self.parked_before(first_step), (first_step, self.parked_at, self.finished)
        stop = first_step + num_steps
        with self.condition:
            self.target = stop
            self.condition.notify_all()
        if stop < self.end:
            self.wait(lambda: self.parked_at == stop)
            if self.finished:
                raise RuntimeError(f"Keras' fit returned before step {stop} of the epoch")
            return self.loss
        self.wait(lambda: False)  # the epoch's last window: until fit has returned
        last = self.end - 1 - (self.end - 1 - self.start) % self.steps_per_execution
        if self.last_begun != last:
            raise RuntimeError(
                f"Keras' fit ended after an execution begun at step {self.last_begun}, "
                f"not at step {last}: it ran out of data before the epoch's end"
            )
        return self.thread.call(self.sync, self.model)

    def wait(self, ready: Callable[[], bool]) -> None:
        """Until `ready()` or fit has finished; fit's exception is raised here."""
        with self.condition:
            while not (ready() or self.finished):
                self.condition.wait(POLL_S)
                if not (ready() or self.finished or self.thread.is_alive()):
                    raise RuntimeError("Keras' fit thread ended without saying how")
        if self.error is not None:
            raise self.error

    def close(self, timeout: float | None = None) -> None:
        """End the fit: a parked one stops before its next step; returns once it has ended (or
        after `timeout` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.condition:
            self.abandon = True
            self.condition.notify_all()
            while not self.finished and self.thread.is_alive():
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if left <= 0:
                    break
                self.condition.wait(left)
        LIVE.discard(self)


LIVE: weakref.WeakSet[EpochFit] = weakref.WeakSet()  # fits that may still be parked


@atexit.register
def close_parked_fits() -> None:
    """A fit left parked (a caller that stopped mid-epoch) ends before the interpreter does."""
    for epoch_fit in list(LIVE):
        epoch_fit.close(timeout=10.0)
