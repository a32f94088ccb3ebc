"""How a row's arms take turns: process pairs, blocks, windows.

A row is measured in `pairs` rounds; each round starts every arm as a fresh serving worker (the
process is the unit of replication: two processes of identical code differ by a few percent,
measured, docs/MEASUREMENTS.md), and stops them at its end. Within a round:

  interleaved  (the default) one arm runs at a time while the others wait blocked, all pinned to
               the same cores: blocks of windows in a randomized balanced order, a random
               permutation of the arms followed by its reverse (two arms: ABBA or BAAB), so
               that neither arm systematically runs first, after the other, or in a drift's
               rising edge; blocks repeat until the round's time is up.
  duet         every arm at once, each on cores of its own (Bulej et al., ICPE 2020): one block
               is one window of each arm, started together; the machine's disturbances hit both.

Windows have one length (steps) for every arm of a row, set in its first round from a short
probe window of each arm, to last about `window_s` seconds (the median over arms), and a
multiple of every arm's dispatch length. The first window of each arm after pinning is a warm-up
and is recorded as such, not used.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.compare.arms import Arm, Checkout, with_settings
from bench.compare.session import ArmProcess
from bench.config import RunConfig

SCHEDULES = ("interleaved", "duet")


@dataclass
class Plan:
    pairs: int = 5  # process rounds per row
    round_s: float = 40.0  # measuring time per round, setup excluded
    window_s: float = 0.5  # about this long, per window
    min_blocks: int = 2  # per round, whatever round_s says
    schedule: str = "interleaved"
    cpus: list[int] | None = None  # interleaved: every arm's; duet: one core per arm in turn
    seed: int = 0
    # Rounds whose workers set up ahead of the one measuring, on the free cores. One is enough
    # when a round outlasts a setup; Keras workers on 1 core need 10-20 s for two arms (import,
    # build, compile, warm-up: measured, docs/MEASUREMENTS.md), so with one ahead the measuring
    # core waited on them for most of a gate; with two the setup core never idles.
    ahead: int = 2


@dataclass
class RowRecord:
    """What a row's rounds measured; `windows` as records for the analysis."""

    row: str
    config: RunConfig
    windows: list[dict] = field(default_factory=list)
    ready: list[dict] = field(default_factory=list)  # every arm's ready message, per round
    steps: int | None = None
    error: str | None = None


def block_order(rng: np.random.Generator, arms: int) -> list[int]:
    """A balanced block: a random permutation of the arms, then the same reversed (ABBA/BAAB)."""
    first = [int(i) for i in rng.permutation(arms)]
    return first + first[::-1]


def window_steps_for(ready: list[dict], probe_s: list[float], window_s: float) -> int:
    """One window length for every arm: a common multiple of their dispatch lengths, about
    `window_s` seconds at the median arm's speed, no longer than the shortest epoch."""
    chunk = math.lcm(*[int(r["chunk_steps"]) for r in ready])
    per_step = float(np.median(probe_s))
    epoch = min(int(r["steps_per_epoch"]) for r in ready)
    steps = max(1, round(window_s / max(per_step, 1e-6) / chunk)) * chunk
    return max(chunk, min(steps, epoch // chunk * chunk))


def cpu_sets(plan: Plan, arms: int, available: list[int]) -> list[list[int]]:
    """The cores of each arm: interleaved, the same for all (plan.cpus, else the last core);
    duet, one each from plan.cpus (else the last `arms` cores)."""
    cores = plan.cpus or available
    if plan.schedule == "duet":
        chosen = cores[-arms:] if len(cores) >= arms else cores
        return [[chosen[i % len(chosen)]] for i in range(arms)]
    return [list(plan.cpus) if plan.cpus else [available[-1]]] * arms


def setup_cpus(plan: Plan, arm_cpus: list[list[int]], available: list[int]) -> list[int] | None:
    """The cores the next round's workers set up on while this round measures: those no arm
    measures on; None (no early start) when there are none."""
    busy = {cpu for cores in arm_cpus for cpu in cores}
    free = [cpu for cpu in available if cpu not in busy]
    return free or None


def measure_rows(
    rows: list[tuple[str, RunConfig]],
    arms: list[Arm],
    code: list[Checkout],
    plan: Plan,
    log_dir: Path,
    available_cpus: list[int],
    progress=None,
) -> list[RowRecord]:
    """Every round of every row. A round's workers start (import, data, setup, compile) while
    a round before it measures (at most `plan.ahead` rounds early), on the cores the measuring
    arms do not use, so that setting up costs no measuring time; they move onto the arms' cores when their round begins. An arm
    that fails ends its row with the error; the other rows go on."""
    records = [RowRecord(label, config) for label, config in rows]
    arm_cpus = cpu_sets(plan, len(arms), available_cpus)
    early = setup_cpus(plan, arm_cpus, available_cpus)
    slots = [(index, pair) for index in range(len(rows)) for pair in range(plan.pairs)]
    started = time.monotonic()

    def launch(slot: int) -> list[ArmProcess]:
        index, pair = slots[slot]
        label, config = rows[index]
        processes = []
        try:
            for arm_index, (arm, checkout) in enumerate(zip(arms, code, strict=True)):
                log = log_dir / f"{label.replace(' ', '_')}-pair{pair}-arm{arm_index}.log"
                processes.append(ArmProcess(arm, with_settings(config, arm), checkout, log, early))
        except Exception:
            for process in processes:
                process.stop()
            raise
        return processes

    pending: dict[int, list[ArmProcess] | Exception] = {}

    def take(slot: int) -> list[ArmProcess]:
        value = pending.pop(slot) if slot in pending else launch(slot)
        if isinstance(value, Exception):
            raise value
        return value

    for slot, (index, pair) in enumerate(slots):
        record = records[index]
        if record.error:
            stop_all(pending.pop(slot, []))
            continue
        processes: list[ArmProcess] = []
        try:
            processes = take(slot)
            ready = [process.wait_ready() for process in processes]
            for later in range(slot + 1, min(slot + 1 + plan.ahead, len(slots))):
                if early and later not in pending and not records[slots[later][0]].error:
                    try:
                        pending[later] = launch(later)
                    except Exception as error:  # noqa: BLE001 - that slot reports it
                        pending[later] = error
            record.ready.extend({"pair": pair, "arm": i, **r} for i, r in enumerate(ready))
            for process, cores in zip(processes, arm_cpus, strict=True):
                process.pin(cores)
            if record.steps is None:
                chunk = math.lcm(*[int(r["chunk_steps"]) for r in ready])
                probe = [p.window(chunk)["wall_s"] / chunk for p in processes]
                record.steps = window_steps_for(ready, probe, plan.window_s)
            run_pair(
                record,
                processes,
                plan,
                pair,
                np.random.default_rng([plan.seed, zlib.crc32(record.row.encode()), pair]),
                progress,
                started,
            )
        except Exception as error:  # noqa: BLE001 - the row fails with the reason
            record.error = str(error)
        finally:
            stop_all(processes)
    for value in pending.values():
        if not isinstance(value, Exception):
            stop_all(value)
    return records


def stop_all(processes) -> None:
    for process in processes if isinstance(processes, list) else []:
        process.stop()


def run_pair(record, processes, plan, pair, rng, progress, started) -> None:
    steps = record.steps
    for index, process in enumerate(processes):  # warm-up after pinning, recorded, not used
        reply = process.window(steps)
        record.windows.append(window_record(pair, -1, -1, index, reply, "warmup", started))
    clock = time.monotonic()
    block = 0
    while block < plan.min_blocks or time.monotonic() - clock < plan.round_s:
        if plan.schedule == "duet":
            for process in processes:
                process.start_window(steps)
            for index, process in enumerate(processes):
                reply = process.finish_window()
                record.windows.append(
                    window_record(pair, block, 0, index, reply, "steady", started)
                )
        else:
            for position, index in enumerate(block_order(rng, len(processes))):
                reply = processes[index].window(steps)
                entry = window_record(pair, block, position, index, reply, "steady", started)
                record.windows.append(entry)
        block += 1
        if progress:
            progress(record, pair, block)


def window_record(pair, block, position, arm, reply, phase, started) -> dict:
    return {
        "pair": pair,
        "block": block,
        "position": position,
        "arm": arm,
        "phase": phase,
        "steps": reply["steps"],
        "wall_s": reply["wall_s"],
        "cpu_s": reply["cpu_s"],
        "steal_s": reply.get("steal_s"),
        "loss": reply.get("loss"),
        "at_s": time.monotonic() - started,
    }
