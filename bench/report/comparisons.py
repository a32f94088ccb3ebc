"""Interleaved comparisons (`bench compare`, `bench gate --ab`) in a report, beside the tables.

A comparison directory holds compare.csv (bench/compare/output.py): one line per row and arm
against the reference arm, and the suite. `bench report` takes such directories beside run
directories, and finds them inside run directories too (e.g. `bench compare --out
RUN_DIR/compare`); each task's section then shows its interleaved ratios after its tables.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ComparisonLine:
    source: Path
    row: str  # e.g. "mnist_cnn torch default"; "suite" for the geometric mean
    arm: str
    reference: str
    ratio: float | None
    low: float | None
    high: float | None
    p_holm: float | None
    pairs: int | None
    verdict: str

    @property
    def task(self) -> str:
        return self.row.split()[0] if self.row != "suite" else ""


def find_comparisons(paths: list[Path]) -> list[Path]:
    """Every compare.csv in or under `paths`, each once, in order."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        candidates = [path] if path.name == "compare.csv" else sorted(path.rglob("compare.csv"))
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    return list(found.values())


def is_comparison_only(path: Path) -> bool:
    """A folder with a comparison and no run in it (not for find_run_dirs)."""
    path = Path(path)
    return bool(find_comparisons([path])) and not any(path.rglob("results.csv"))


def read_comparisons(files: list[Path]) -> list[ComparisonLine]:
    import pandas as pd

    lines = []
    for file in files:
        frame = pd.read_csv(file)
        for record in frame.to_dict("records"):

            def value(key, record=record):
                item = record.get(key)
                return (
                    None if item is None or (isinstance(item, float) and math.isnan(item)) else item
                )

            pairs = value("pairs")
            lines.append(
                ComparisonLine(
                    source=file.parent,
                    row=str(record["row"]),
                    arm=str(record["arm"]),
                    reference=str(record["reference"]),
                    ratio=value("ratio"),
                    low=value("low"),
                    high=value("high"),
                    p_holm=value("p_holm"),
                    pairs=None if pairs is None else int(pairs),
                    verdict=str(value("verdict") or ""),
                )
            )
    return lines


def ratio_text(line: ComparisonLine) -> str:
    if line.ratio is None:
        return ""
    if line.low is None or line.high is None:
        return f"x{line.ratio:.3f}"
    return f"x{line.ratio:.3f} [{line.low:.3f}, {line.high:.3f}]"


COLUMNS = ("row", "step time", "ratio [95% interval]", "p (Holm)", "pairs", "verdict", "from")


def cells(line: ComparisonLine) -> list[str]:
    return [
        line.row if line.row != "suite" else "suite (geometric mean)",
        f"{line.arm} / {line.reference}",
        ratio_text(line),
        "" if line.p_holm is None else f"{line.p_holm:.4f}",
        "" if line.pairs is None else str(line.pairs),
        line.verdict,
        line.source.name,
    ]


def markdown_section(lines: list[ComparisonLine], title: str) -> list[str]:
    if not lines:
        return []
    out = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(cells(line)) + " |" for line in lines]
    return [*out, ""]


def html_section(lines: list[ComparisonLine], title: str) -> str:
    if not lines:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(line)) + "</tr>"
        for line in lines
    )
    return (
        f'<section class="group"><h3>{html.escape(title)}</h3>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


TITLE = "Interleaved comparisons (bench compare: arms alternated on one machine)"
