"""Measurement helpers: step-time statistics, memory probes (NVML, host RSS), CPU facts.

No framework is imported here. Device synchronization is the backend's job (its run_steps
returns with the device idle); this module only turns window times into per-run statistics.
The statistics `bench gate` compares two runs by are in bench/stats.py.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    # CPU seconds the whole process used in the window (time.process_time, all its threads): what
    # the steps cost the host, whoever else held the cores meanwhile
    cpu_seconds: float | None = None
    # ms of the machine-speed probe (bench.calibration.Probe) around the window: the geometric
    # mean of the probes just before and just after it, outside the timed window
    probe_ms: float | None = None


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
        result.update(step_time_cv_pct=None, samples_per_s=None, cpu_time_median_ms=None)
        return result
    cpu = [w.cpu_seconds / w.steps for w in steady if w.cpu_seconds is not None]
    result["cpu_time_median_ms"] = float(np.median(cpu)) * 1e3 if cpu else None
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
    """Device memory this process holds, from NVML; inert where there is no NVIDIA GPU/driver.

    Build it before any framework is imported: construction resolves the devices this process
    can see (CUDA_VISIBLE_DEVICES, as CUDA reads it, with MIG instances in place of a
    MIG-enabled GPU) and takes a baseline of each one's used memory. It never raises: without
    pynvml, a driver, a GPU or any visible device it is inert (`available` False, `sample()`
    None).

    A sample is the sum, over the visible devices, of the memory NVML lists for this process's
    PID (source "process"). Where no entry carries our PID (a container's PID namespace, where
    NVML lists host PIDs; MIG without the permission to list processes) it falls back to the
    growth of each device's used memory since the baseline, clamped at 0 per device (source
    "device"). That figure counts every allocation made on those devices since the baseline,
    other processes' included: an upper bound on ours where the devices are shared.

    `peak_bytes` is the largest process-matched sample once any sample has matched by PID,
    else the largest device sample, else None; `source` says which of the two it is. Integer
    entries of CUDA_VISIBLE_DEVICES are read as NVML indices (PCI bus order), which is CUDA's
    order only with CUDA_DEVICE_ORDER=PCI_BUS_ID or identical GPUs.
    """

    def __init__(self, visible_devices: str | None = None) -> None:
        """`visible_devices`: a CUDA_VISIBLE_DEVICES value; None reads the environment now."""
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._baselines: list[int] = []
        self._process_peak: int | None = None
        self._device_peak: int | None = None
        self._last_sample: float | None = None
        if visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = _visible_handles(pynvml, visible_devices)
            baselines = [int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in handles]
        except Exception:  # no library, no driver, no GPU: NVML simply has nothing to say
            return
        if handles:
            self._nvml, self._handles, self._baselines = pynvml, handles, baselines

    @property
    def available(self) -> bool:
        return self._nvml is not None

    @property
    def baseline_bytes(self) -> int | None:
        """Used memory of the visible devices at construction, summed; None when inert."""
        return sum(self._baselines) if self.available else None

    @property
    def peak_bytes(self) -> int | None:
        """The largest sample: process-matched ones if any, else device ones; None before any."""
        return self._process_peak if self._process_peak is not None else self._device_peak

    @property
    def source(self) -> str | None:
        """What `peak_bytes` measures: "process", "device", or None before any sample."""
        if self._process_peak is not None:
            return "process"
        return "device" if self._device_peak is not None else None

    def sample(self) -> int | None:
        """This process's device memory now (see the class); also updates the peak.

        None when inert or when an NVML call fails (the peak so far is kept)."""
        if self._nvml is None:
            return None
        self._last_sample = time.perf_counter()
        try:
            used = self._process_bytes()
            matched = used is not None
            if used is None:
                used = self._device_bytes()
        except Exception:  # a lost GPU, a driver hiccup: skip this sample
            return None
        if matched:
            self._process_peak = max(self._process_peak or 0, used)
        else:
            self._device_peak = max(self._device_peak or 0, used)
        return used

    def maybe_sample(self, min_interval_s: float = 1.0) -> None:
        """Sample unless the last sample was less than `min_interval_s` ago (perf_counter).

        The first call always samples; a call that does not sample costs one clock read."""
        if self._nvml is None:
            return
        last = self._last_sample
        if last is None or time.perf_counter() - last >= min_interval_s:
            self.sample()

    def _process_bytes(self) -> int | None:
        """Sum of the memory NVML lists for our PID; None when no entry matched with a value."""
        pid, total, matched = os.getpid(), 0, False
        for handle in self._handles:
            for entry in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if entry.pid == pid and entry.usedGpuMemory is not None:
                    total += int(entry.usedGpuMemory)
                    matched = True
        return total if matched else None

    def _device_bytes(self) -> int:
        """Growth of each visible device's used memory since the baseline, clamped at 0, summed."""
        total = 0
        for handle, baseline in zip(self._handles, self._baselines):
            total += max(0, int(self._nvml.nvmlDeviceGetMemoryInfo(handle).used) - baseline)
        return total


def _visible_handles(nvml: Any, visible: str | None) -> list[Any]:
    """NVML handles of the devices CUDA would show for CUDA_VISIBLE_DEVICES=`visible`.

    None: every GPU. Otherwise comma-separated indices, GPU-/MIG- UUIDs or unique prefixes of
    them; like CUDA, the list ends at the first entry that names no device (so "" and "-1"
    name none). A MIG-enabled GPU stands for its MIG instances. Duplicates count once."""
    count = nvml.nvmlDeviceGetCount()
    entries = [str(index) for index in range(count)] if visible is None else visible.split(",")
    handles: list[Any] = []
    for entry in entries:
        resolved = _resolve_entry(nvml, entry.strip(), count)
        if resolved is None:
            break
        handle, is_mig = resolved
        instances = None if is_mig else _mig_handles(nvml, handle)
        handles.extend([handle] if instances is None else instances)
    return _unique(nvml, handles)


def _resolve_entry(nvml: Any, entry: str, count: int) -> tuple[Any, bool] | None:
    """(handle, is a MIG handle) of one CUDA_VISIBLE_DEVICES entry; None if it names none."""
    if re.fullmatch(r"[+-]?[0-9]+", entry):
        index = int(entry)
        return (nvml.nvmlDeviceGetHandleByIndex(index), False) if 0 <= index < count else None
    if not entry:
        return None
    try:
        return nvml.nvmlDeviceGetHandleByUUID(entry), entry.upper().startswith("MIG-")
    except nvml.NVMLError:  # not a whole UUID: perhaps a unique prefix of one, as CUDA allows
        return _match_uuid_prefix(nvml, entry, count)


def _match_uuid_prefix(nvml: Any, prefix: str, count: int) -> tuple[Any, bool] | None:
    """The one GPU or MIG instance whose UUID starts with `prefix`; None if none or several."""
    prefix = prefix.lower()
    matches = []
    for index in range(count):
        gpu = nvml.nvmlDeviceGetHandleByIndex(index)
        candidates = [(gpu, False)] + [(h, True) for h in _mig_handles(nvml, gpu) or []]
        for handle, is_mig in candidates:
            if _text(nvml.nvmlDeviceGetUUID(handle)).lower().startswith(prefix):
                matches.append((handle, is_mig))
    return matches[0] if len(matches) == 1 else None


def _mig_handles(nvml: Any, gpu: Any) -> list[Any] | None:
    """Handles of a GPU's MIG instances; None when MIG is off or the GPU does not support it."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(gpu)
    except nvml.NVMLError:  # NotSupported (no MIG on this GPU), or a driver without MIG calls
        return None
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        return None
    instances = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
        try:
            instances.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, index))
        except nvml.NVMLError_NotFound:  # an empty slot
            continue
    return instances


def _unique(nvml: Any, handles: list[Any]) -> list[Any]:
    """`handles` without repeats of one device (by UUID; kept as they are if it is unknown)."""
    seen: set[str] = set()
    unique = []
    for handle in handles:
        try:
            key = _text(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError:
            key = f"id:{id(handle)}"
        if key not in seen:
            seen.add(key)
            unique.append(handle)
    return unique


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_devices() -> list[dict[str, str]]:
    """Name, driver and memory of every NVIDIA GPU NVML sees; [] without NVML or GPU.

    A MIG-enabled GPU also gets "mig_devices": how many MIG instances it has."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    devices = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            device = {
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "driver": driver,
                "memory_mib": str(memory // 2**20),
            }
            instances = _mig_handles(pynvml, handle)
            if instances is not None:
                device["mig_devices"] = str(len(instances))
            devices.append(device)
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


def cpu_ticks() -> dict[str, list[int]] | None:
    """/proc/stat's time counters in clock ticks, by line name ("cpu" for the machine, "cpu0",
    "cpu1", ... per core): user nice system idle iowait irq softirq steal ...; None without
    /proc/stat (not Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    fields = (line.split() for line in lines if line.startswith("cpu"))
    return {name: [int(value) for value in values] for name, *values in fields}


def idle_ticks() -> dict[int, int] | None:
    """Each core's idle ticks so far (/proc/stat's idle and iowait); None without /proc/stat."""
    ticks = cpu_ticks()
    if ticks is None:
        return None
    return {int(name[3:]): t[3] + t[4] for name, t in ticks.items() if name[3:].isdigit()}


def pin_threads(cpus: list[int]) -> int:
    """Every thread of this process onto `cpus` (threads started later inherit the mask); the
    number of threads pinned. os.sched_setaffinity(0) would move the calling thread only."""
    threads = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            threads += 1
        except (ProcessLookupError, PermissionError):  # the thread ended meanwhile
            continue
    return threads


def available_cpus() -> list[int]:
    """The cores this process may run on, ascending (its affinity mask, not the machine's
    total; every core where the platform has no affinity call)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    return len(available_cpus())
