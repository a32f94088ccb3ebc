"""What one side of a comparison (the baseline or the current run) holds: a Measurement per row
identity, read by bench/gate/sources.py.

Rows are matched on IDENTITY. Rows of one side with the same identity (several seeds, several
runs pooled into one baseline) are pooled: their windows together, their accuracies averaged
(each row one sample: with several seeds, the seed mean, with its Student-t interval across them
in `accuracy_interval`, as bench.results.seeds sums seeds up).
Bad input raises GateDataError: one line that names the file and what to do (exit code 2).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.results import ResultsError, number, text
from bench.stats import MeanInterval, mean_interval
from bench.tasks import TASKS

IDENTITY = ("task", "backend", "device", "device_name", "precision", "mode", "batch_size")
CALIBRATION_KEYS = ("calib_matmul_ms", "calib_dispatch_ms")


# A source the gate cannot use (missing, malformed, another schema): exit code 2. The gate's
# name for the results layer's one error type, which reading a run directory raises.
GateDataError = ResultsError


@dataclass
class Measurement:
    """Everything one side has for one identity: its rows, pooled."""

    identity: tuple[str, ...]
    rows: list[dict[str, object]] = field(default_factory=list)  # typed values or CSV text
    step_ms: list[float] = field(default_factory=list)  # steady per-step window times (wall)
    cpu_step_ms: list[float] = field(default_factory=list)  # the same windows' CPU time per step
    rows_without_cpu: int = 0  # ok rows whose windows have no CPU time: cpu_step_ms is unusable
    # the machine-speed probe's ms around each of the same windows (bench.calibration.Probe):
    # which state the machine was in while the window ran
    probe_ms: list[float] = field(default_factory=list)
    rows_without_probe: int = 0

    @property
    def has_cpu_times(self) -> bool:
        return bool(self.cpu_step_ms) and self.rows_without_cpu == 0

    @property
    def has_probe_times(self) -> bool:
        return bool(self.probe_ms) and self.rows_without_probe == 0

    def value(self, column: str) -> str:
        return text(self.rows[0].get(column))

    @property
    def device(self) -> str:
        return self.identity[IDENTITY.index("device")]

    @property
    def device_name(self) -> str:
        return self.identity[IDENTITY.index("device_name")]

    @property
    def status(self) -> str:
        """ok when every pooled row is ok; otherwise the first other status."""
        statuses = (text(r.get("status")) for r in self.rows)
        return next((status for status in statuses if status != "ok"), "ok")

    @property
    def error(self) -> str:
        rows = (r for r in self.rows if text(r.get("status")) != "ok")
        lines = next((text(r.get("error")) for r in rows), "").strip().splitlines()
        return lines[-1][:200] if lines else ""

    @property
    def accuracies(self) -> list[float]:
        """The pooled rows' final test accuracies (rows without one left out)."""
        values = [number(r.get("final_test_accuracy")) for r in self.rows]
        return [value for value in values if value is not None]

    @property
    def accuracy(self) -> float | None:
        """The mean final test accuracy of the pooled rows: the seed mean where they are seeds."""
        values = self.accuracies
        return statistics.fmean(values) if values else None

    @property
    def seeds(self) -> int:
        """How many distinct seeds the rows with an accuracy ran."""
        rows = (r for r in self.rows if number(r.get("final_test_accuracy")) is not None)
        return len({text(r.get("seed")) for r in rows})

    @property
    def accuracy_interval(self) -> MeanInterval | None:
        """The accuracies' mean with its 95% Student-t interval, min and max (bench.stats)."""
        return mean_interval(self.accuracies)

    @property
    def target(self) -> float | None:
        """The task's target accuracy: the row's (real data only), else the task registry's."""
        target = number(self.rows[0].get("target_accuracy"))
        if target is not None:
            return target
        task = TASKS.get(self.identity[0])
        return task.target_accuracy if task and self.value("data") == "real" else None

    @property
    def calibration(self) -> dict[str, float] | None:
        """Median calibration over the pooled rows; None when a row has none (schema 1)."""
        medians = {}
        for key in CALIBRATION_KEYS:
            values = [number(r.get(key)) for r in self.rows]
            if None in values:
                return None
            medians[key] = statistics.median(v for v in values if v is not None)
        return medians

    @property
    def test_hooks(self) -> str:
        return " ".join(sorted({text(r.get("test_hooks")) for r in self.rows} - {""}))

    @property
    def label(self) -> str:
        task, backend, _, _, precision, mode, batch_size = self.identity
        return f"{task}/{backend}/{mode}/{precision}/b{batch_size}"


@dataclass
class Side:
    """The baseline or the current run: its measurements by identity, and where they came from."""

    name: str  # "baseline" or "current"
    sources: list[str]
    measurements: dict[tuple[str, ...], Measurement]


@dataclass(frozen=True)
class WindowTimes:
    """A row's steady windows: wall and CPU ms per step, and the probe's ms around each (the
    lists are aligned; cpu and probe are empty where the source has none)."""

    wall: list[float]
    cpu: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)


Times = tuple[dict[str, object], WindowTimes]
