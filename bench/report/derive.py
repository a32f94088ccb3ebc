"""Derived values: like-for-like groups, ranks within them, speed ranges, MFU, labels, notes."""

from __future__ import annotations

import functools
import re

from bench.results import Group, ResultsError, compact, like_for_like, number, text

MODE_ORDER = ("eager", "compiled", "fused", "default")

# Dense (no sparsity) peak FLOP/s per precision policy, from the vendors' datasheets:
# NVIDIA H100 Tensor Core GPU datasheet: H100 SXM FP32 67 TFLOPS, TF32 989 and BF16 1,979 with
# sparsity (495 and 989 dense); H100 PCIe FP32 51, TF32 756 and BF16 1,513 with sparsity.
# NVIDIA H200 datasheet (SXM): the same compute as the H100 SXM. NVIDIA A100 Tensor Core GPU
# datasheet (SXM and PCIe): FP32 19.5, TF32 156, BF16 312 dense. fp32 (TF32 off) runs on the
# CUDA cores, so its peak is the non-tensor FP32 one. CPUs and other GPUs get no MFU.
DEVICE_PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H100.*PCIe", {"fp32": 51e12, "tf32": 378e12, "bf16": 756e12}),
    (r"H100.*(SXM|HBM3)", {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12}),
    (r"H200(?!.*NVL)", {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12}),
    (r"A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12}),
)


class ReportError(ResultsError):
    """Nothing to report, or no tensorboardX: one line, exit code 2 (like every ResultsError)."""


@functools.cache
def backend_order() -> tuple[str, ...]:
    """The backends in the registry's order; read when first needed, so that importing the
    report loads no `backends` package."""
    from backends import BACKENDS

    return tuple(BACKENDS)


def device_peak_flops(device: str, device_name: str, precision: str) -> float | None:
    """The datasheet peak for this GPU and precision; None for CPUs and unknown devices."""
    if device != "cuda":
        return None
    for pattern, peaks in DEVICE_PEAK_FLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peaks.get(precision)
    return None


def short_reason(error: str, limit: int = 120) -> str:
    """The error's first line; for a dead worker, also the last line of its stderr tail."""
    head, _, tail = error.partition("; stderr tail:")
    lines = head.strip().splitlines()
    reason = lines[0].strip() if lines else ""
    tail_lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if tail_lines:
        reason += f": {tail_lines[-1]}"
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def add_measures(row: dict) -> None:
    """The row's samples/s range (from p90 and p10), device peak, MFU and note; rank unset."""
    batch_size = number(row["batch_size"])
    p10, p90 = number(row["step_time_p10_ms"]), number(row["step_time_p90_ms"])
    low = row["samples_per_s_low"] = batch_size / p90 * 1e3 if batch_size and p90 else None
    high = row["samples_per_s_high"] = batch_size / p10 * 1e3 if batch_size and p10 else None
    row["samples_per_s_range"] = f"{compact(low)}–{compact(high)}" if low and high else ""
    device, name, precision = (text(row[c]) for c in ("device", "device_name", "precision"))
    peak = device_peak_flops(device, name, precision)
    tflops = number(row["train_tflops_per_s"])
    row["device_peak_flops"] = peak
    row["mfu_pct"] = 100 * tflops * 1e12 / peak if peak and tflops is not None else None
    row["note"] = short_reason(text(row["error"])) if row["status"] != "ok" else ""
    if row["status"] == "ok" and number(row["samples_per_s"]) is None:
        row["note"] = "no steady-state window (too few steps for the window size): not ranked"
    row["rank"] = row["speed_vs_fastest"] = None


def order_key(row: dict) -> tuple:
    """Backends in the registry's order, then modes, seeds and run directories."""
    backend, mode, order = text(row["backend"]), text(row["mode"]), backend_order()
    return (
        order.index(backend) if backend in order else len(order),
        backend,
        MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER),
        mode,
        number(row["seed"]) or 0,
        row["run_dir"],
    )


def assign_labels(rows: list[dict]) -> None:
    """backend/mode, plus the seed, host or run id where backend/mode alone is ambiguous."""
    for row in rows:
        row["label"] = f"{text(row['backend'])}/{text(row['mode'])}"
    for key, template in (("seed", "seed {}"), ("host", "{}"), ("run_id", "{}")):
        same_label: dict[str, list[dict]] = {}
        for row in rows:
            same_label.setdefault(row["label"], []).append(row)
        for same in same_label.values():
            if len(same) > 1 and len({row[key] for row in same}) > 1:
                for row in same:
                    row["label"] += " " + template.format(text(row[key]))


def rank_group(rows: list[dict]) -> list[dict]:
    """Ok rows fastest first, ranked against the fastest; the others after them, unranked."""
    for row in rows:
        add_measures(row)
    assign_labels(rows)
    ranked = [r for r in rows if r["status"] == "ok" and number(r["samples_per_s"])]
    ranked.sort(key=lambda r: -number(r["samples_per_s"]))
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
        row["speed_vs_fastest"] = number(row["samples_per_s"]) / number(ranked[0]["samples_per_s"])
    others = [r for r in rows if r not in ranked]
    others.sort(key=lambda r: (text(r["status"]), order_key(r)))
    return ranked + others


def group_rows(rows: list[dict]) -> list[Group]:
    """The merged rows in like-for-like groups (bench.results.like_for_like), each ranked."""
    return [Group(group.key, rank_group(group.rows)) for group in like_for_like(rows)]


def caption(group: Group) -> str:
    """The table's environment: device and settings, framework versions, hosts and runs."""
    versions = sorted({v for row in group.rows for v in text(row["framework_version"]).split()})
    runs = sorted({row["_run"].description() for row in group.rows})
    return (
        f"Environment: {group.title}; frameworks: {', '.join(versions) or 'unknown'}; "
        f"host: {'; '.join(runs)}"
    )
