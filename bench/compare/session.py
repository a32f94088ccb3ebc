"""One live arm: a serving worker process (bench/serve.py) and its command/reply pipes."""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import time
from pathlib import Path

from bench.cell import worker_environment
from bench.compare.arms import Arm, Checkout, arm_environment
from bench.config import RunConfig
from bench.runner import die_with_parent
from bench.serve import PROTOCOL

READY_TIMEOUT_S = 900.0  # import, data, setup, compile and warm-up of one arm
WINDOW_TIMEOUT_S = 300.0


class ArmFailed(RuntimeError):
    """An arm's worker reported an error, died or stopped answering."""


def config_fields(config: RunConfig) -> dict:
    """The RunConfig fields that differ from their defaults (and the two required ones): what a
    worker of another revision is told, so that a field it does not know is only ever one that
    was set on purpose."""
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    fields = dataclasses.asdict(config)
    return {k: v for k, v in fields.items() if k in ("task", "backend") or v != defaults.get(k)}


def start_worker(setup_cpus: list[int] | None) -> None:
    """In the worker, before exec: die with the coordinator (as the runner's workers do), and
    start on `setup_cpus` when given."""
    die_with_parent()
    if setup_cpus:
        os.sched_setaffinity(0, setup_cpus)


class ArmProcess:
    """A serving worker of `arm` for `config`, started at once; its log is `log_path`."""

    def __init__(
        self,
        arm: Arm,
        config: RunConfig,
        code: Checkout,
        log_path: Path,
        setup_cpus: list[int] | None = None,
    ) -> None:
        """`setup_cpus`: the cores it starts on (its threads inherit them) until pinned."""
        self.arm, self.config, self.log_path = arm, config, log_path
        env = arm_environment(arm, code, worker_environment(config))
        read_fd, write_fd = os.pipe()
        command = [code.python, "-m", "bench.serve", "--config", json.dumps(config_fields(config))]
        command += ["--replies-fd", str(write_fd)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=code.path,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                text=True,
                preexec_fn=lambda: start_worker(setup_cpus),
            )
        os.close(write_fd)
        self.replies_fd = read_fd
        self.buffer = b""
        self.ready: dict = {}

    def log_tail(self, characters: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:].strip()
        except OSError:
            return ""

    def fail(self, message: str) -> ArmFailed:
        tail = self.log_tail()
        return ArmFailed(f"{self.arm.label}: {message}" + (f"\n{tail}" if tail else ""))

    def receive(self, timeout: float) -> dict:
        """The next reply (a JSON line), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.fail(f"no answer within {timeout:.0f} s")
            readable, _, _ = select.select([self.replies_fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(self.replies_fd, 65536)
            if not chunk:
                code = self.process.wait()
                raise self.fail(f"the worker exited (code {code}) without answering")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        if reply.get("event") == "error":
            raise self.fail(reply.get("error", "error"))
        return reply

    def send(self, **command: object) -> None:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self.fail("the worker is gone") from None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        reply = self.receive(timeout)
        if reply.get("event") != "ready":
            raise self.fail(f"expected ready, got {reply}")
        if reply.get("protocol") != PROTOCOL:
            raise self.fail(
                f"serving protocol {reply.get('protocol')} where this coordinator speaks {PROTOCOL}"
            )
        self.ready = reply
        return reply

    def pin(self, cpus: list[int]) -> dict:
        self.send(cmd="pin", cpus=cpus)
        return self.receive(WINDOW_TIMEOUT_S)

    def start_window(self, steps: int) -> None:
        self.send(cmd="window", steps=steps)

    def finish_window(self) -> dict:
        reply = self.receive(WINDOW_TIMEOUT_S)
        if reply.get("event") != "window":
            raise self.fail(f"expected a window, got {reply}")
        return reply

    def window(self, steps: int) -> dict:
        self.start_window(steps)
        return self.finish_window()

    def stop(self) -> None:
        """Stop the worker (politely, then by force); never raises."""
        if self.process.poll() is None:
            try:
                self.send(cmd="stop")
                self.receive(30.0)
            except ArmFailed:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin,):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.close(self.replies_fd)
        except OSError:
            pass
