"""Tables of rows: column specs, one renderer per output format, and like-for-like groups.

A table is a sequence of Column specs and a sequence of rows (dicts: typed values from
`records`, or CSV text). Rows are only ever compared within a Group: the rows whose
GROUP_COLUMNS agree (threads only on the cpu). results.md (`markdown_table`) and the report
both draw one table per group; the gate's tables can use the same renderers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.results.schema import number, text

Row = Mapping[str, Any]

# Rows are like for like when these agree (threads only on the cpu, where they set the speed).
GROUP_COLUMNS = ("task", "device", "device_name", "threads", "precision", "batch_size", "data")


# ---------------------------------------------------------------------------- column specs


@dataclass(frozen=True)
class Column:
    """One column: its header, the row key it shows, how it formats a number (None: the value
    as text, unparsed) and whether it holds numbers (right-aligned)."""

    title: str
    key: str
    format: Callable[[float], str] | None = None
    numeric: bool = True

    def cell(self, row: Row) -> str:
        """The cell's text; "" when the row has no value (or, for a number, no finite one)."""
        if self.format is None:
            return text(row.get(self.key))
        value = number(row.get(self.key))
        return "" if value is None else self.format(value)


def thousands(value: float) -> str:
    return f"{value:,.0f}"


def significant(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def compact(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def readable(value: float) -> str:
    """Whole numbers from 100 with thousands separators, below 1 four digits, else one decimal."""
    if value.is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}"


# ---------------------------------------------------------------------------- renderers


def markdown(columns: Sequence[Column], rows: Iterable[Row], empty: str = "–") -> str:
    """A Markdown table; `empty` stands for an empty cell, "|" and newlines are escaped."""

    def escape(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ") or empty

    lines = [
        "| " + " | ".join(column.title for column in columns) + " |",
        "|" + "|".join("---:" if column.numeric else "---" for column in columns) + "|",
    ]
    lines += ["| " + " | ".join(escape(c.cell(row)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(
    columns: Sequence[Column],
    rows: Iterable[Row],
    *,
    caption: str = "",
    table_id: str = "",
    row_class: Callable[[Row], str] = lambda row: text(row.get("status")),
) -> str:
    """An HTML table (class "comparison"); cells classed "number" or "text", rows by status."""
    head = "".join(f"<th>{html.escape(column.title)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"number" if c.numeric else "text"}">{html.escape(c.cell(row))}</td>'
            for c in columns
        )
        body.append(f'<tr class="{html.escape(row_class(row))}">{cells}</tr>')
    identity = f' id="{html.escape(table_id)}"' if table_id else ""
    return (
        f'<table class="comparison"{identity}><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def text_table(columns: Sequence[Column], rows: Iterable[Row], empty: str = "-") -> str:
    """A fixed-width plain-text table for a terminal: columns two spaces apart."""
    header = [column.title for column in columns]
    lines = [[c.cell(row) or empty for c in columns] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def joined(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if column.numeric else cell.ljust(width)
            for cell, width, column in zip(cells, widths, columns)
        ).rstrip()

    return "\n".join([joined(header), "  ".join("-" * w for w in widths), *map(joined, lines)])


# ---------------------------------------------------------------------------- groups


def group_key(row: Row) -> tuple[str, ...]:
    """The row's GROUP_COLUMNS as text; threads count only on the cpu."""
    cpu = text(row.get("device")) == "cpu"
    return tuple("" if c == "threads" and not cpu else text(row.get(c)) for c in GROUP_COLUMNS)


def group_order(key: tuple[str, ...]) -> tuple:
    """Tables by task, GPUs before CPUs, then device name, threads, precision, batch size."""
    task, device, device_name, threads, precision, batch_size, data = key
    numbers = (number(threads) or 0, precision, number(batch_size) or 0)
    return (task, device != "cuda", device_name, *numbers, data)


@dataclass
class Group:
    """Rows that are like for like: one table, ranked within itself only."""

    key: tuple[str, ...]
    rows: list

    def value(self, column: str) -> str:
        return self.key[GROUP_COLUMNS.index(column)]

    @property
    def slug(self) -> str:
        """A file-name-safe id, e.g. mnist_cnn-cuda-NVIDIA_H100_80GB_HBM3-bf16-b64-real."""
        task, device, device_name, threads, precision, batch_size, data = self.key
        threads = f"-t{threads}" if threads else ""
        name = f"{task}-{device}-{device_name}{threads}-{precision}-b{batch_size}-{data}"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")

    @property
    def title(self) -> str:
        """e.g. "NVIDIA H100 80GB HBM3 (cuda) · bf16 · batch 64 · real data"."""
        task, device, device_name, threads, precision, batch_size, data = self.key
        where = f"{device}, {threads} threads" if threads else device
        return f"{device_name} ({where}) · {precision} · batch {batch_size} · {data} data"


def like_for_like(rows: Iterable[Row]) -> list[Group]:
    """The rows in groups (in group_order), each group's rows in their given order."""
    groups: dict[tuple[str, ...], list] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    return [Group(key, groups[key]) for key in sorted(groups, key=group_order)]


# ---------------------------------------------------------------------------- seeds

# What a seed does not change: rows that agree on these differ only in seed (and run).
SEED_KEY = (*GROUP_COLUMNS, "backend", "mode", "epochs", "train_samples")


def seed_key(row: Row) -> tuple[str, ...]:
    """The row's configuration: its like-for-like group (threads only on the cpu), then the
    rest of SEED_KEY as text."""
    rest = tuple(text(row.get(name)) for name in SEED_KEY[len(GROUP_COLUMNS) :])
    return (*group_key(row), *rest)


def several_seeds(rows: Iterable[Row]) -> bool:
    """Whether some configuration among the rows has rows of more than one seed."""
    seeds: dict[tuple[str, ...], set[str]] = {}
    for row in rows:
        seeds.setdefault(seed_key(row), set()).add(text(row.get("seed")))
    return any(len(found) > 1 for found in seeds.values())


# ---------------------------------------------------------------------------- results.md

RUN_COLUMNS = (
    Column("task", "task", numeric=False),
    Column("backend", "backend", numeric=False),
    Column("device", "device", numeric=False),
    Column("prec", "precision", numeric=False),
    Column("mode", "mode", numeric=False),
    Column("status", "status", numeric=False),
    Column("samples/s", "samples_per_s", readable),
    Column("step ms", "step_time_median_ms", readable),
    Column("p10 ms", "step_time_p10_ms", readable),
    Column("p90 ms", "step_time_p90_ms", readable),
    Column("compile s", "compile_s", readable),
    Column("alloc MiB", "peak_alloc_mb", readable),
    Column("data MiB", "data_resident_mb", readable),
    Column("RSS MiB", "peak_rss_mb", readable),
    Column("final acc", "final_test_accuracy", readable),
    Column("best acc", "best_test_accuracy", readable),
    Column("to target s", "time_to_target_s", readable),
)


def run_notes(rows: Iterable[Row]) -> list[str]:
    """Why each row that is not ok is not, and which rows ran under test-only hooks."""
    notes = []
    for row in rows:
        cell, status, error = text(row.get("cell_id")), text(row.get("status")), row.get("error")
        if status != "ok" and text(error).strip():
            notes.append(f"- `{cell}`: {status}: {text(error).strip().splitlines()[-1][:200]}")
        if text(row.get("test_hooks")):
            notes.append(f"- `{cell}`: TEST HOOKS {text(row.get('test_hooks'))}: not real")
    return notes


def markdown_table(rows: Iterable[Row]) -> str:
    """results.md, also printed at the end of `bench run`: one table per like-for-like group,
    under a heading naming the group; ok rows fastest first, then the others, and under each
    table why each row that is not ok is not; where a configuration ran several seeds, the
    group's rows summed up over seeds below them (bench.results.seeds). `rows`: dicts (typed
    or text) or a DataFrame."""
    if hasattr(rows, "to_dict"):  # a DataFrame
        from bench.results.store import records

        rows = records(rows)  # type: ignore[arg-type]
    parts = []
    for group in like_for_like(rows):
        ordered = sorted(
            group.rows,
            key=lambda r: (text(r.get("status")) != "ok", -(number(r.get("samples_per_s")) or 0)),
        )
        part = f"### {group.value('task')} · {group.title}\n\n{markdown(RUN_COLUMNS, ordered, '-')}"
        notes = run_notes(ordered)
        parts.append(part + ("\n" + "\n".join(notes) + "\n" if notes else "") + seeds_part(group))
    return "\n".join(parts)


SEEDS_GUIDE = (
    "final accuracy's mean with its 95% Student-t interval across seeds, min and max; reached: "
    "seeds that reached the target; median to target: a seed that never reached it counts as "
    "infinite, so it is empty unless more than half did"
)


def seeds_part(group: Group) -> str:
    """The group's "over seeds" table where some configuration has several seeds, else "" (a
    single-seed run's results.md is unchanged). Loads pandas only then."""
    if not several_seeds(group.rows):
        return ""
    from bench.results.seeds import seed_markdown

    return f"\nOver seeds ({SEEDS_GUIDE}):\n\n{seed_markdown(group.rows)}"
