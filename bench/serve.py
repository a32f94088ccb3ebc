"""The serving worker: one run set up once, then windows of steps on command, until told to stop.

    python -m bench.serve --config '<RunConfig JSON>' --replies-fd N     (commands on stdin)

`bench compare` (bench/compare/) starts one per arm and alternates windows between them. The
worker is the one-shot worker's run (bench/worker.py `Run`: the same environment, framework
import, data, initial weights, setup and first dispatch) with the schedule left to the caller:

  -> ready     after setup, the first dispatch (the compile) and the warm-up windows:
               {"event": "ready", "protocol": 1, "chunk_steps", "steps_per_epoch", "compile_s", ...}
  <- window    {"cmd": "window", "steps": N}: N steps, a multiple of chunk_steps, as N/chunk_steps
               consecutive run_steps calls (each returns with the device synchronized: the one
               dispatch length the backend compiled), timed together; answers
               {"event": "window", "steps", "wall_s", "cpu_s", "steal_s", "loss"}
  <- pin       {"cmd": "pin", "cpus": [1]}: every thread of the process (the frameworks' pools
               included) onto those cores; answers {"event": "pinned", "cpus", "threads"}
  <- stop      {"cmd": "stop"}: answers {"event": "stopped"} and exits 0
  -> error     {"event": "error", "error": "..."} on any failure (then exit 1)

Windows measure the steps alone: nothing but the window's run_steps calls happens between the two
clock reads. Where a window would run past the epoch, the epoch's remaining steps run first,
untimed, and the next epoch begins (its permutation, also untimed), so that every window lies in
one epoch and the backends see their windows in order, as in a one-shot run. wall_s is
perf_counter time, cpu_s the process's CPU time (all threads), steal_s the time the hypervisor
ran other guests on the worker's cores (/proc/stat's steal column, of the pinned cores once
pinned, else of all: a shared VM's own measure of lost time; None where /proc/stat is absent).

Replies go to a pipe of their own (--replies-fd): frameworks print on stdout and stderr. The
protocol is versioned: `bench compare` starts workers of other git revisions and checks it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.cell import base_row, worker_environment
from bench.config import RunConfig
from bench.metrics import cpu_count, cpu_ticks, pin_threads

PROTOCOL = 1
STEAL = 7  # the steal column of bench.metrics.cpu_ticks' counters


def steal_seconds(cpus: list[int] | None) -> float | None:
    """Seconds of steal time so far on `cpus` (all of the machine when None); None without
    /proc/stat (not Linux)."""
    ticks = cpu_ticks()
    if ticks is None:
        return None
    names = {"cpu"} if cpus is None else {f"cpu{index}" for index in cpus}
    steal = sum(counters[STEAL] for name, counters in ticks.items() if name in names)
    return steal / os.sysconf("SC_CLK_TCK")


class Server:
    """A set-up run that steps on command (the state between windows: the epoch and its step)."""

    def __init__(self, config: RunConfig, replies) -> None:
        from bench.worker import Progress, Run

        self.config, self.replies = config, replies
        # a Run writes files only from its epochs' phases, which a server does not use
        self.run = Run(config, Path.cwd(), base_row(config), Progress(None))
        self.epoch = self.step = 0
        self.cpus: list[int] | None = None

    def reply(self, **message: object) -> None:
        self.replies.write(json.dumps(message) + "\n")
        self.replies.flush()

    def start(self) -> None:
        """Load, set up, compile and warm up; then say ready."""
        run = self.run
        run.load()
        run.setup()
        backend = run.backend
        self.chunk = backend.window_steps
        if self.chunk > run.steps_per_epoch:
            raise ValueError(
                f"a dispatch of {self.chunk} steps is longer than the epoch "
                f"({run.steps_per_epoch} steps): use more data or fewer --window-steps"
            )
        run.begin_epoch(0)
        first = self.chunk if backend.mode == "fused" else 1
        clock = time.perf_counter()
        self.advance(first)
        compile_s = time.perf_counter() - clock
        clock = time.perf_counter()
        for _ in range(self.config.warmup_windows):
            self.window(self.chunk)
        row = run.row
        self.reply(
            event="ready",
            protocol=PROTOCOL,
            pid=os.getpid(),
            backend=self.config.backend,
            mode=row["mode"],
            mechanism=row["mechanism"],
            framework_version=row["framework_version"],
            device_name=row["device_name"],
            threads=row["threads"],
            params=row["params"],
            chunk_steps=self.chunk,
            steps_per_epoch=run.steps_per_epoch,
            import_s=row["import_s"],
            setup_s=row["setup_s"],
            compile_s=compile_s,
            warmup_s=time.perf_counter() - clock,
        )

    def advance(self, steps: int) -> float:
        """`steps` steps from where the epoch stands (they fit in it); the last loss."""
        loss = float("nan")
        end = self.step + steps
        while self.step < end:
            size = min(self.chunk, end - self.step)
            loss = self.run.backend.run_steps(self.step, size)
            self.step += size
        return loss

    def next_epoch(self) -> None:
        """The epoch's remaining steps (untimed), then the next epoch's permutation."""
        run = self.run
        if self.step < run.steps_per_epoch:
            self.advance(run.steps_per_epoch - self.step)
        self.epoch += 1
        self.step = 0
        run.begin_epoch(self.epoch)

    def window(self, steps: int) -> dict:
        if steps < 1 or steps % self.chunk or steps > self.run.steps_per_epoch:
            raise ValueError(
                f"a window must be a positive multiple of {self.chunk} steps, at most an epoch "
                f"({self.run.steps_per_epoch}); got {steps}"
            )
        if self.step + steps > self.run.steps_per_epoch:
            self.next_epoch()
        steal = steal_seconds(self.cpus)
        clock, cpu_clock = time.perf_counter(), time.process_time()
        loss = self.advance(steps)  # run_steps calls of one chunk each, nothing else
        wall, cpu = time.perf_counter() - clock, time.process_time() - cpu_clock
        steal_after = steal_seconds(self.cpus)
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise FloatingPointError(f"training loss is {loss} at epoch {self.epoch + 1}")
        stolen = None if steal is None or steal_after is None else steal_after - steal
        return {"steps": steps, "wall_s": wall, "cpu_s": cpu, "steal_s": stolen, "loss": loss}

    def serve(self, commands) -> None:
        for line in commands:
            if not line.strip():
                continue
            command = json.loads(line)
            name = command.get("cmd")
            if name == "window":
                self.reply(event="window", **self.window(int(command["steps"])))
            elif name == "pin":
                self.cpus = [int(cpu) for cpu in command["cpus"]]
                self.reply(event="pinned", cpus=self.cpus, threads=pin_threads(self.cpus))
            elif name == "stop":
                self.reply(event="stopped")
                return
            else:
                raise ValueError(f"unknown command {command!r}")


def config_from_json(text: str) -> RunConfig:
    """A RunConfig from the fields this revision knows; an unknown field is an error (the
    coordinator may be of another revision: it says which fields it set)."""
    fields = json.loads(text)
    known = {field.name for field in dataclasses.fields(RunConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"this revision's RunConfig has no field {', '.join(unknown)}")
    return RunConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="RunConfig fields as JSON")
    parser.add_argument("--replies-fd", type=int, required=True, help="pipe for the replies")
    args = parser.parse_args(argv)
    replies = os.fdopen(args.replies_fd, "w", buffering=1)
    try:
        config = config_from_json(args.config)
        config = dataclasses.replace(config, threads=config.threads or cpu_count())
        os.environ.update(worker_environment(config, base={}))  # in case it was started by hand
        server = Server(config, replies)
        server.start()
        server.serve(sys.stdin)
    except BaseException as error:  # noqa: BLE001 - every failure is answered
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}"[-2000:]
        try:
            replies.write(json.dumps({"event": "error", "error": message}) + "\n")
            replies.flush()
        except OSError:  # the coordinator is gone
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
