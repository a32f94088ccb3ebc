"""Which rows are compared, and how the step times of each pair of machines are: raw, normalized
by the calibration, or not at all; and which windows ran in a CPU's fast state."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.calibration import speed_factor
from bench.gate.sides import IDENTITY, Measurement, Side
from bench.gate.tolerances import FAST_STATE


@dataclass(frozen=True)
class MachineComparison:
    """How step times of one (baseline machine, current machine) pair are compared."""

    method: str  # "raw", "normalized" or "none"
    factor: float  # current times are divided by this (1 for raw)
    reason: str
    # probe ms at or under which a window ran in the machine's fast state, per side (baseline,
    # current); None where a side has no probes
    fast_limits: tuple[float, float] | None = None


def match(baseline: Side, current: Side) -> list[tuple[Measurement | None, Measurement | None]]:
    """Pairs on the full identity; then, for rows left over, on the identity without the device
    name when each side ran on one machine of that device class (the same suite on another CI
    machine). Baseline order first, then rows found only in the current run."""
    pairs: list[tuple[Measurement | None, Measurement | None]] = []
    left_current = dict(current.measurements)
    left_baseline = []
    for identity, measurement in baseline.measurements.items():
        if identity in left_current:
            pairs.append((measurement, left_current.pop(identity)))
        else:
            left_baseline.append(measurement)
    by_loose = {loose_identity(m): m for m in left_current.values()}
    for measurement in left_baseline:
        partner = by_loose.get(loose_identity(measurement))
        if partner is not None and one_machine(baseline, current, measurement.device):
            del left_current[partner.identity]
            pairs.append((measurement, partner))
        else:
            pairs.append((measurement, None))
    pairs.extend((None, m) for m in left_current.values())
    return pairs


def loose_identity(measurement: Measurement) -> tuple[str, ...]:
    return tuple(v for c, v in zip(IDENTITY, measurement.identity) if c != "device_name")


def machine_names(side: Side, device: str) -> set[str]:
    return {m.device_name for m in side.measurements.values() if m.device == device}


def one_machine(baseline: Side, current: Side, device: str) -> bool:
    return len(machine_names(baseline, device)) == 1 == len(machine_names(current, device))


def on_machine(side: Side, device: str, device_name: str) -> list[Measurement]:
    return [
        m for m in side.measurements.values() if (m.device, m.device_name) == (device, device_name)
    ]


def side_calibration(side: Side, device: str, device_name: str) -> dict[str, float] | None:
    """Median calibration of a side's rows on one machine (over the whole matrix, so a moment of
    contention in one row's calibration does not count); None when no row has one (schema 1,
    or workers that died before calibrating)."""
    calibrations = [m.calibration for m in on_machine(side, device, device_name)]
    calibrations = [c for c in calibrations if c is not None]
    if not calibrations:
        return None
    return {key: statistics.median(c[key] for c in calibrations) for key in calibrations[0]}


def fastest_probe(side: Side, device: str, device_name: str) -> float | None:
    """The fastest probe of a side's windows on one machine (the whole matrix: minutes of it),
    None when a row there has no probes."""
    rows = [m for m in on_machine(side, device, device_name) if m.step_ms]
    if not rows or not all(m.has_probe_times for m in rows):
        return None
    return min(min(m.probe_ms) for m in rows)


def fast_limits(
    baseline: Side, current: Side, device: str, base_name: str, current_name: str
) -> tuple[float, float] | None:
    """The probe time at or under which a window ran in the fast state, per side. On one CPU
    model both sides share the fastest probe of either (a run that never saw the fast state
    must not call its slow state fast); on two models each side has its own."""
    if device != "cpu":
        return None
    base = fastest_probe(baseline, device, base_name)
    cur = fastest_probe(current, device, current_name)
    if base is None or cur is None:
        return None
    if base_name == current_name:
        base = cur = min(base, cur)
    return FAST_STATE * base, FAST_STATE * cur


def compare_machines(
    baseline: Side, current: Side, device: str, base_name: str, current_name: str, normalize: str
) -> MachineComparison:
    same = base_name == current_name
    limits = fast_limits(baseline, current, device, base_name, current_name)
    if device != "cpu":
        if not same:
            return MachineComparison(
                "none",
                1.0,
                f"different GPUs ({base_name} vs {current_name}): step times not compared",
            )
        return MachineComparison("raw", 1.0, f"same GPU ({base_name}): raw step times")
    machines = f"{base_name}" if same else f"{base_name} -> {current_name}"
    states = (
        "windows in the fast state compared (probe <= "
        f"{limits[0]:.3g}/{limits[1]:.3g} ms baseline/current)"
        if limits
        else "no probes to tell the machine's states apart"
    )
    if same and normalize != "always":
        return MachineComparison(
            "raw", 1.0, f"same CPU ({machines}): raw step times, {states}", limits
        )
    base_cal = side_calibration(baseline, device, base_name)
    current_cal = side_calibration(current, device, current_name)
    if normalize == "never":
        return MachineComparison(
            "raw", 1.0, f"{machines}: raw step times (--normalize never), {states}", limits
        )
    if base_cal is None or current_cal is None:
        return MachineComparison(
            "none", 1.0, f"different CPUs ({machines}) and no calibration to normalize by"
        )
    factor = speed_factor(current_cal, base_cal)
    change = (
        f"calibration x{factor:.3f} (matmul x"
        f"{current_cal['calib_matmul_ms'] / base_cal['calib_matmul_ms']:.3f}, dispatch x"
        f"{current_cal['calib_dispatch_ms'] / base_cal['calib_dispatch_ms']:.3f})"
    )
    which = "same CPU" if same else "different CPUs"
    return MachineComparison(
        "normalized",
        factor,
        f"{which} ({machines}): step times normalized, {change}, {states}",
        limits,
    )
