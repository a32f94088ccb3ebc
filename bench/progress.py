"""The runner's progress line: the matrix position, the run's epoch and step, and ETAs for the
run and the matrix, on stderr (redrawn in place on a terminal, every 10 s in a log)."""

from __future__ import annotations

import sys
import time

from bench.config import RunConfig

# What a worker is doing before its first timed window ends (its `phase` events), in words: the
# progress line shows it, and a run killed for time says where it was (bench.runner).
PHASES = {
    "loading": "loading (framework import, data, initial weights)",
    "setup": "setting up (the model, optimizer and data on the device)",
    "training": "in its first training dispatch (compilation and the first window)",
}


def describe(event: dict | None) -> str:
    """Where a worker was at its last progress event."""
    if not event:
        return "not yet reporting (starting Python and the worker)"
    if "done" not in event:
        return PHASES.get(str(event.get("phase")), str(event.get("phase")))
    where = f"at step {event['done']} of {event.get('total', '?')}"
    return where + f", epoch {event.get('epoch', '?')}/{event.get('epochs', '?')}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLine:
    """One status line on stderr: redrawn in place on a terminal, every 10 s in a log."""

    def __init__(self, total_runs: int, stream=sys.stderr) -> None:
        self.total_runs = total_runs
        self.stream = stream
        self.interactive = stream.isatty()
        self.last_print = 0.0
        self.run_seconds: list[float] = []
        self.run_start: tuple[int, float] | None = None  # (steps, seconds) at the first event

    def run_eta(self, event: dict, elapsed: float) -> float | None:
        """Remaining seconds from the step rate since the first event (past the compile)."""
        done, total = event.get("done", 0), event.get("total", 0)
        if self.run_start is None or done < self.run_start[0]:
            self.run_start = (done, elapsed)
            return None
        steps, seconds = done - self.run_start[0], elapsed - self.run_start[1]
        return seconds / steps * (total - done) if steps > 0 else None

    def matrix_eta(self, index: int, run_eta: float | None) -> float | None:
        if not self.run_seconds:
            return None
        mean = sum(self.run_seconds) / len(self.run_seconds)
        remaining = self.total_runs - index - 1
        return (run_eta or 0.0) + remaining * mean

    def show(self, index: int, config: RunConfig, event: dict, elapsed: float) -> None:
        phase = "done" not in event  # a phase before the first window: no steps to rate yet
        run_eta = None if phase else self.run_eta(event, elapsed)
        now = time.monotonic()
        if not self.interactive and now - self.last_print < 10:
            return
        self.last_print = now
        done, total = event.get("done", 0), event.get("total", 0)
        accuracy = event.get("accuracy")
        parts = [f"[{index + 1}/{self.total_runs}] {config.cell_id}"]
        if phase:
            parts.append(f"{describe(event)} for {format_duration(elapsed)}")
        else:
            parts += [
                f"epoch {event.get('epoch', '?')}/{event.get('epochs', '?')}",
                f"step {done}/{total}",
                f"run ETA {format_duration(run_eta)}",
            ]
        parts.append(f"matrix ETA {format_duration(self.matrix_eta(index, run_eta))}")
        if accuracy is not None:
            parts.append(f"test acc {accuracy:.4f}")
        text = "  ".join(parts)
        if self.interactive:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def finish(self, index: int, config, row: dict, seconds: float) -> None:
        self.run_seconds.append(seconds)
        self.run_start = None
        speed = row.get("samples_per_s")
        detail = f"{speed:,.0f} samples/s" if isinstance(speed, float) else ""
        accuracy = row.get("final_test_accuracy")
        if isinstance(accuracy, float):
            detail += f", test acc {accuracy:.4f}"
        if row.get("status") != "ok":
            detail = str(row.get("error") or "").strip().splitlines()[-1:][0:1]
            detail = detail[0][:160] if detail else ""
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(
            f"{prefix}[{index + 1}/{self.total_runs}] {config.cell_id}: {row.get('status')} "
            f"in {format_duration(seconds)}  {detail}\n"
        )
        self.stream.flush()
