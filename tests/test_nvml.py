"""NvmlProbe and nvml_devices against a fake pynvml: PID-matched and device-growth samples,
CUDA_VISIBLE_DEVICES (indices, UUIDs, prefixes, the stop at an invalid entry), MIG instances,
throttled sampling, NVML errors. No GPU needed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from bench import metrics
from bench.metrics import NvmlProbe, nvml_devices

GIB = 2**30
MIB = 2**20
ME = os.getpid()
OTHER = ME + 1


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # pynvml's names
    pass


class NVMLError_NotFound(NVMLError):
    pass


class NVMLError_InvalidArgument(NVMLError):
    pass


class NVMLError_Unknown(NVMLError):
    pass


@dataclass(eq=False)
class Device:
    """A fake GPU or MIG instance. `mig`: None (no MIG support), or the MIG slots (None: an
    empty slot) of a GPU whose mode is `mig_mode`."""

    uuid: str
    used: int = 0
    total: int = 80 * GIB
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    mig: list[Device | None] | None = None
    mig_mode: int = 1
    name: str = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    """The pynvml calls metrics.py makes, over a list of fake GPUs."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_Unknown = NVMLError_Unknown
    NVML_DEVICE_MIG_DISABLE = 0
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, gpus: list[Device], init_error: Exception | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.broken = False  # every sampling call raises while set
        self.process_queries: list[str] = []  # uuid of each device whose processes were listed

    def _all(self) -> list[Device]:
        instances = [m for gpu in self.gpus for m in gpu.mig or [] if m is not None]
        return self.gpus + instances

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Device:
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> Device:
        for device in self._all():
            if device.uuid == uuid:
                return device
        raise NVMLError_NotFound()

    def nvmlDeviceGetUUID(self, handle: Device) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: Device) -> bytes:
        return handle.name.encode()

    def nvmlDeviceGetMigMode(self, handle: Device) -> list[int]:
        if handle not in self.gpus:  # what NVML does on a MIG handle is unspecified: never ask
            raise AssertionError(f"MIG mode asked of the MIG instance {handle.uuid}")
        if handle.mig is None:
            raise NVMLError_NotSupported()
        return [handle.mig_mode, handle.mig_mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Device) -> int:
        return len(handle.mig or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Device, index: int) -> Device:
        instance = (handle.mig or [])[index]
        if instance is None:
            raise NVMLError_NotFound()
        return instance

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Device) -> list[SimpleNamespace]:
        if self.broken:
            raise NVMLError_Unknown()
        self.process_queries.append(handle.uuid)
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.processes]

    def nvmlDeviceGetMemoryInfo(self, handle: Device) -> SimpleNamespace:
        if self.broken:
            raise NVMLError_Unknown()
        return SimpleNamespace(
            used=handle.used, total=handle.total, free=handle.total - handle.used
        )


@pytest.fixture(autouse=True)
def _no_visible_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def install(monkeypatch, *gpus: Device, **kwargs) -> FakeNvml:
    fake = FakeNvml(list(gpus), **kwargs)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def two_gpus() -> tuple[Device, Device]:
    return Device("GPU-aaaa-0000", used=1 * GIB), Device("GPU-bbbb-1111", used=2 * GIB)


def assert_inert(probe: NvmlProbe) -> None:
    assert not probe.available
    assert probe.sample() is None
    probe.maybe_sample(0.0)
    assert (probe.peak_bytes, probe.source, probe.baseline_bytes) == (None, None, None)


# -- inert probes ---------------------------------------------------------------------------------


def test_without_pynvml_the_probe_is_inert(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert_inert(NvmlProbe())
    assert nvml_devices() == []


def test_nvml_init_raising_makes_the_probe_inert(monkeypatch):
    fake = install(monkeypatch, *two_gpus(), init_error=NVMLError_Unknown())
    assert_inert(NvmlProbe())
    assert fake.process_queries == []
    assert nvml_devices() == []


def test_an_error_while_taking_the_baseline_makes_the_probe_inert(monkeypatch):
    fake = install(monkeypatch, *two_gpus())
    fake.broken = True
    assert_inert(NvmlProbe())


@pytest.mark.parametrize("visible", ["", "-1", " -1 ", "-1,0", "7", "nonsense,0"])
def test_visible_devices_naming_no_device_make_the_probe_inert(monkeypatch, visible):
    install(monkeypatch, *two_gpus())
    assert_inert(NvmlProbe(visible))


def test_an_empty_cuda_visible_devices_in_the_environment_makes_the_probe_inert(monkeypatch):
    install(monkeypatch, *two_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert_inert(NvmlProbe())


# -- process-matched and device samples -----------------------------------------------------------


def test_process_memory_is_summed_over_every_gpu(monkeypatch):
    first, second = two_gpus()
    first.processes = [(OTHER, 5 * GIB), (ME, 300 * MIB)]
    second.processes = [(ME, 700 * MIB), (OTHER, 9 * GIB)]
    install(monkeypatch, first, second)
    probe = NvmlProbe()
    assert probe.available
    assert probe.baseline_bytes == 3 * GIB
    assert probe.sample() == 1000 * MIB
    assert (probe.peak_bytes, probe.source) == (1000 * MIB, "process")


def test_the_peak_is_the_largest_process_sample(monkeypatch):
    gpu = Device("GPU-aaaa-0000")
    install(monkeypatch, gpu)
    probe = NvmlProbe()
    for used in (1 * GIB, 3 * GIB, 2 * GIB):
        gpu.processes = [(ME, used)]
        assert probe.sample() == used
    assert (probe.peak_bytes, probe.source) == (3 * GIB, "process")


def test_without_a_pid_match_the_sample_is_device_growth_since_the_baseline(monkeypatch):
    first, second = two_gpus()  # a container: NVML lists host PIDs, none of them ours
    first.processes = second.processes = [(OTHER, 4 * GIB)]
    install(monkeypatch, first, second)
    probe = NvmlProbe()
    assert probe.baseline_bytes == 3 * GIB
    first.used += 512 * MIB  # the framework allocates after the baseline
    second.used += 1 * GIB
    assert probe.sample() == 1536 * MIB
    assert (probe.peak_bytes, probe.source) == (1536 * MIB, "device")


def test_device_growth_is_clamped_at_zero_per_device(monkeypatch):
    first, second = two_gpus()
    install(monkeypatch, first, second)
    probe = NvmlProbe()
    first.used -= 1 * GIB  # someone else freed memory on the first GPU
    assert probe.sample() == 0
    second.used += 256 * MIB
    assert probe.sample() == 256 * MIB  # not 256 MiB - 1 GiB
    assert (probe.peak_bytes, probe.source) == (256 * MIB, "device")


def test_entries_without_used_memory_are_ignored(monkeypatch):
    first, second = two_gpus()
    first.processes = [(ME, None)]
    second.processes = [(ME, 600 * MIB)]
    install(monkeypatch, first, second)
    probe = NvmlProbe()
    assert probe.sample() == 600 * MIB
    assert probe.source == "process"


def test_a_pid_match_without_used_memory_falls_back_to_the_device(monkeypatch):
    first, second = two_gpus()
    first.processes = second.processes = [(ME, None)]
    install(monkeypatch, first, second)
    probe = NvmlProbe()
    second.used += 100 * MIB
    assert probe.sample() == 100 * MIB
    assert probe.source == "device"


def test_process_matched_samples_are_preferred_over_device_ones(monkeypatch):
    gpu = Device("GPU-aaaa-0000", used=1 * GIB)
    install(monkeypatch, gpu)
    probe = NvmlProbe()
    gpu.used += 5 * GIB
    assert probe.sample() == 5 * GIB
    assert (probe.peak_bytes, probe.source) == (5 * GIB, "device")
    gpu.processes = [(ME, 2 * GIB)]
    assert probe.sample() == 2 * GIB
    assert (probe.peak_bytes, probe.source) == (2 * GIB, "process")
    gpu.processes = []
    gpu.used += 3 * GIB
    assert probe.sample() == 8 * GIB  # a device sample is returned, but the peak stays ours
    assert (probe.peak_bytes, probe.source) == (2 * GIB, "process")


def test_an_nvml_error_mid_sample_keeps_the_peak(monkeypatch):
    gpu = Device("GPU-aaaa-0000", processes=[(ME, 2 * GIB)])
    fake = install(monkeypatch, gpu)
    probe = NvmlProbe()
    assert probe.sample() == 2 * GIB
    fake.broken = True
    gpu.processes = [(ME, 7 * GIB)]
    assert probe.sample() is None
    assert (probe.peak_bytes, probe.source) == (2 * GIB, "process")
    assert probe.available
    fake.broken = False
    assert probe.sample() == 7 * GIB
    assert probe.peak_bytes == 7 * GIB


def test_an_error_before_any_sample_leaves_no_peak(monkeypatch):
    fake = install(monkeypatch, Device("GPU-aaaa-0000", processes=[(ME, GIB)]))
    probe = NvmlProbe()
    fake.broken = True
    assert probe.sample() is None
    assert (probe.peak_bytes, probe.source) == (None, None)


# -- which devices are visible --------------------------------------------------------------------


def test_cuda_visible_devices_limits_the_devices_counted(monkeypatch):
    first, second = two_gpus()
    first.processes = [(ME, 1 * GIB)]
    second.processes = [(ME, 3 * GIB)]
    fake = install(monkeypatch, first, second)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    probe = NvmlProbe()
    assert probe.baseline_bytes == 2 * GIB
    assert probe.sample() == 3 * GIB
    assert fake.process_queries == ["GPU-bbbb-1111"]


def test_the_argument_overrides_the_environment(monkeypatch):
    first, second = two_gpus()
    first.processes = [(ME, 1 * GIB)]
    second.processes = [(ME, 3 * GIB)]
    install(monkeypatch, first, second)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert NvmlProbe("0").sample() == 1 * GIB


def test_the_environment_is_read_at_construction(monkeypatch):
    first, second = two_gpus()
    first.processes = [(ME, 1 * GIB)]
    second.processes = [(ME, 3 * GIB)]
    install(monkeypatch, first, second)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    probe = NvmlProbe()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert probe.sample() == 1 * GIB


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("0,2", 1 * GIB + 4 * GIB),
        (" 2 , 1 ", 4 * GIB + 2 * GIB),
        ("0,-1,1", 1 * GIB),  # CUDA stops at the first invalid entry
        ("1,9,0", 2 * GIB),
        ("0,0,1", 1 * GIB + 2 * GIB),  # a device named twice counts once
        ("0,GPU-aaaa-0,1", 1 * GIB + 2 * GIB),  # also by index and by UUID
    ],
)
def test_index_lists(monkeypatch, visible, expected):
    gpus = [
        Device(f"GPU-{c * 4}-{i}", processes=[(ME, (i + 1) * GIB)]) for i, c in enumerate("abc")
    ]
    gpus[2].processes = [(ME, 4 * GIB)]
    install(monkeypatch, *gpus)
    assert NvmlProbe(visible).sample() == expected


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("GPU-8f3c0000-1111-2222-3333-444455556666", 1 * GIB),
        ("GPU-9a01bbbb-1111-2222-3333-444455556666,0", 2 * GIB + 1 * GIB),
        ("GPU-9a01", 2 * GIB),  # a unique prefix, as CUDA accepts
        ("gpu-8F3C", 1 * GIB),
        ("GPU-8f3c,GPU-,1", 1 * GIB),  # "GPU-" names both: ambiguous, the list ends there
        ("GPU-ffff,0", None),  # names no GPU: nothing is visible
    ],
)
def test_uuid_entries(monkeypatch, visible, expected):
    first = Device("GPU-8f3c0000-1111-2222-3333-444455556666", processes=[(ME, 1 * GIB)])
    second = Device("GPU-9a01bbbb-1111-2222-3333-444455556666", processes=[(ME, 2 * GIB)])
    install(monkeypatch, first, second)
    assert NvmlProbe(visible).sample() == expected


# -- MIG --------------------------------------------------------------------------------------------


def mig_machine() -> tuple[Device, Device]:
    """GPU 0 has MIG on, with instances in slots 0 and 2 (slot 1 empty); GPU 1 has no MIG."""
    instances = [
        Device("MIG-1111", used=1 * GIB, total=10 * GIB, processes=[(ME, 300 * MIB)]),
        None,
        Device("MIG-2222", used=2 * GIB, total=10 * GIB, processes=[(ME, 500 * MIB)]),
    ]
    parent = Device("GPU-aaaa-0000", used=40 * GIB, processes=[(ME, 9 * GIB)], mig=instances)
    return parent, Device("GPU-bbbb-1111", used=4 * GIB, processes=[(ME, 100 * MIB)])


def test_a_mig_gpu_stands_for_its_instances(monkeypatch):
    parent, plain = mig_machine()
    fake = install(monkeypatch, parent, plain)
    probe = NvmlProbe()
    assert probe.baseline_bytes == 1 * GIB + 2 * GIB + 4 * GIB  # not the parent's 40 GiB
    assert probe.sample() == 300 * MIB + 500 * MIB + 100 * MIB  # not the parent's 9 GiB
    assert fake.process_queries == ["MIG-1111", "MIG-2222", "GPU-bbbb-1111"]


def test_mig_device_growth_is_read_from_the_instances(monkeypatch):
    parent, plain = mig_machine()
    for device in (parent, plain, *[m for m in parent.mig if m is not None]):
        device.processes = []  # MIG without the permission to list processes
    install(monkeypatch, parent, plain)
    probe = NvmlProbe("0")
    parent.used += 20 * GIB
    parent.mig[2].used += 700 * MIB
    assert probe.sample() == 700 * MIB
    assert probe.source == "device"


def test_a_gpu_with_mig_off_is_used_itself(monkeypatch):
    parent, _ = mig_machine()
    parent.mig_mode = FakeNvml.NVML_DEVICE_MIG_DISABLE
    install(monkeypatch, parent)
    assert NvmlProbe().sample() == 9 * GIB


def test_a_mig_gpu_without_instances_shows_no_device(monkeypatch):
    parent = Device("GPU-aaaa-0000", processes=[(ME, GIB)], mig=[None, None])
    install(monkeypatch, parent)
    assert_inert(NvmlProbe())


@pytest.mark.parametrize(
    ("visible", "expected"),
    [("MIG-2222", 500 * MIB), ("MIG-2222,MIG-1111", 800 * MIB), ("MIG-11", 300 * MIB)],
)
def test_mig_uuid_entries(monkeypatch, visible, expected):
    parent, plain = mig_machine()
    fake = install(monkeypatch, parent, plain)
    probe = NvmlProbe(visible)
    assert probe.sample() == expected
    assert "GPU-aaaa-0000" not in fake.process_queries


# -- throttled sampling -----------------------------------------------------------------------------


def test_maybe_sample_waits_for_the_interval(monkeypatch):
    gpu = Device("GPU-aaaa-0000", processes=[(ME, GIB)])
    fake = install(monkeypatch, gpu)
    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    probe = NvmlProbe()
    probe.maybe_sample()  # the first call always samples
    assert len(fake.process_queries) == 1
    assert probe.peak_bytes == GIB
    now[0] += 0.5
    gpu.processes = [(ME, 2 * GIB)]
    probe.maybe_sample()
    assert len(fake.process_queries) == 1
    assert probe.peak_bytes == GIB
    now[0] += 0.5
    probe.maybe_sample()
    assert len(fake.process_queries) == 2
    assert probe.peak_bytes == 2 * GIB
    now[0] += 0.2
    probe.maybe_sample(min_interval_s=0.25)
    assert len(fake.process_queries) == 2
    probe.maybe_sample(min_interval_s=0.2)
    assert len(fake.process_queries) == 3


def test_a_direct_sample_restarts_the_interval(monkeypatch):
    fake = install(monkeypatch, Device("GPU-aaaa-0000", processes=[(ME, GIB)]))
    now = [5.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    probe = NvmlProbe()
    probe.sample()
    now[0] += 0.9
    probe.maybe_sample()
    assert len(fake.process_queries) == 1
    now[0] += 0.1
    probe.maybe_sample()
    assert len(fake.process_queries) == 2


# -- nvml_devices -----------------------------------------------------------------------------------


def test_nvml_devices_lists_every_gpu_and_counts_mig_instances(monkeypatch):
    parent, plain = mig_machine()
    plain.name, plain.total = "NVIDIA A10", 24 * GIB
    install(monkeypatch, parent, plain)
    assert nvml_devices() == [
        {
            "name": "NVIDIA H100 80GB HBM3",
            "driver": "550.54.15",
            "memory_mib": "81920",
            "mig_devices": "2",
        },
        {"name": "NVIDIA A10", "driver": "550.54.15", "memory_mib": "24576"},
    ]
