"""Measurement helpers: step-time statistics, memory probes (NVML, host RSS), CPU facts.

No framework is imported here. Device synchronization is the backend's job (its run_steps
returns with the device idle); this module only turns window times into statistics.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """One timed call of run_steps: `steps` steps that took `seconds`, the device synced."""

    epoch: int
    first_step: int
    steps: int
    seconds: float
    phase: str  # "compile" (first dispatch), "warmup" or "steady"
    loss: float


def step_time_stats(windows: list[Window], batch_size: int) -> dict[str, float | int | None]:
    """Median, p10, p90, mean and spread of the per-step time of the steady windows.

    Each window gives one sample (its seconds / steps), so a percentile is over windows.
    samples/s is batch size over the median step time.
    """
    steady = [w for w in windows if w.phase == "steady"]
    result: dict[str, float | int | None] = {
        "steady_windows": len(steady),
        "steady_steps": sum(w.steps for w in steady),
    }
    if not steady:
        for key in ("median", "p10", "p90", "mean"):
            result[f"step_time_{key}_ms"] = None
        result.update(step_time_cv_pct=None, samples_per_s=None)
        return result
    per_step = np.array([w.seconds / w.steps for w in steady])
    median = float(np.median(per_step))
    result.update(
        step_time_median_ms=median * 1e3,
        step_time_p10_ms=float(np.percentile(per_step, 10)) * 1e3,
        step_time_p90_ms=float(np.percentile(per_step, 90)) * 1e3,
        step_time_mean_ms=float(per_step.mean()) * 1e3,
        step_time_cv_pct=(
            100 * statistics.stdev(per_step) / per_step.mean() if len(per_step) > 1 else 0.0
        ),
        samples_per_s=batch_size / median,
    )
    return result


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class NvmlProbe:
    """Device memory this process holds, from NVML; inert where there is no NVIDIA GPU/driver."""

    def __init__(self) -> None:
        self.pynvml = None
        self.peak_bytes: int | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.pynvml = pynvml
        except Exception:  # no library, no driver, no GPU: NVML simply has nothing to say
            self.pynvml = None

    @property
    def available(self) -> bool:
        return self.pynvml is not None

    def sample(self) -> int | None:
        """Sum of this process's memory over all visible GPUs; also updates the peak."""
        if self.pynvml is None:
            return None
        nvml, pid, used = self.pynvml, os.getpid(), 0
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid and process.usedGpuMemory:
                        used += process.usedGpuMemory
        except Exception:
            return None
        self.peak_bytes = max(self.peak_bytes or 0, used)
        return used


def nvml_devices() -> list[dict[str, str]]:
    """Name, driver and memory of every NVIDIA GPU NVML sees; [] without NVML or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    devices = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            devices.append(
                {
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                    "memory_mib": str(memory // 2**20),
                }
            )
    except Exception:
        pass
    return devices


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
