"""The report's documents: report.md and the self-contained report.html; build_report writes
them with the CSVs and plots."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from bench.report import comparisons as interleaved
from bench.report.derive import ReportError, caption, group_rows
from bench.report.loading import find_run_dirs, merge_runs
from bench.report.plots import PLOT_DPI, PLOT_SIZE_INCHES, draw_plots
from bench.report.tables import (
    group_html_table,
    markdown_table,
    seeds_html_table,
    seeds_markdown_table,
    write_pivot_csv,
    write_runs_csv,
)
from bench.results import (
    SCHEMA_VERSION,
    SEEDS_GUIDE,
    Group,
    Run,
    read_run,
    several_seeds,
    write_atomic,
    write_seeds_csv,
)

READING_GUIDE = (
    "samples/s: steady-state training throughput (batch size / median step time); its range is "
    "the p10-p90 of the per-window step times. vs fastest: samples/s over the fastest ok row of "
    "the same table (rows of other tables are never compared). compile s: the first dispatch. "
    "alloc / NVML / RSS: peak framework allocator, this process on the GPU per NVML, host RSS, "
    "MiB. MFU: training FLOP/s over the GPU's dense datasheet peak for the precision. Columns: "
    "results/SCHEMA.md."
)


def environment_lines(run: Run) -> list[str]:
    environment = run.environment
    gpus = [
        f"{gpu.get('name')} ({gpu.get('memory_mib')} MiB, driver {gpu.get('driver')})"
        for gpu in environment.get("gpus") or []
    ]
    packages = sorted((environment.get("packages") or {}).items())
    return [
        f"command: {environment.get('command', '?')}",
        f"git: {environment.get('git_sha') or '?'}",
        f"python {environment.get('python', '?')} on {environment.get('platform', '?')}",
        f"CPU: {environment.get('cpu', '?')} ({environment.get('cpu_count', '?')} CPUs)",
        f"GPUs: {', '.join(gpus) or 'none'}",
        f"packages: {', '.join(f'{name}={version}' for name, version in packages) or '?'}",
    ]


def by_task(groups: list[Group], compared: list) -> list[tuple[str, list[Group], list]]:
    """(task, its groups, its interleaved comparison lines), tasks in the groups' order; the
    comparisons of tasks without rows (and the suites) last, under ""."""
    tasks = list(dict.fromkeys(group.value("task") for group in groups))
    sections = [
        (
            task,
            [g for g in groups if g.value("task") == task],
            [c for c in compared if c.task == task],
        )
        for task in tasks
    ]
    rest = [c for c in compared if c.task not in tasks]
    return sections + ([("", [], rest)] if rest else [])


def markdown_report(
    runs: list[Run], groups: list[Group], plots: dict, out_dir: Path, compared: list
) -> str:
    lines = ["# Benchmark report", ""]
    lines += [
        f"Runs: {'; '.join(run.description() for run in runs) or 'none'}. "
        f"Schema version {SCHEMA_VERSION}."
    ]
    lines += ["", READING_GUIDE, ""]
    for task, task_groups, task_comparisons in by_task(groups, compared):
        lines += [f"## {task or 'Other comparisons'}", ""]
        for group in task_groups:
            lines += [f"### {group.title}", "", caption(group), "", markdown_table(group)]
            if seeds_table := seeds_markdown_table(group):
                lines += [f"Over seeds ({SEEDS_GUIDE}):", "", seeds_table]
            for description, path in plots[group.key]:
                lines += [f"![{description}]({path.relative_to(out_dir).as_posix()})", ""]
        lines += interleaved.markdown_section(task_comparisons, interleaved.TITLE)
    lines += ["## Environments", ""]
    for run in runs:
        lines += [f"### {run.description()}", ""]
        lines += [f"- {line}" for line in environment_lines(run)] + [""]
    return "\n".join(lines)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed, tr.oom, tr.timeout, tr.diverged { background: #fdecea; }
tr.skipped { background: #f5f5f5; color: #777; }
div.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); }
figure { margin: 0.5em; }
img { width: 100%; height: auto; border: 1px solid #eee; }
ul.environment { font-size: 0.9em; }
"""


def html_figure(description: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    width, height = (round(size * PLOT_DPI) for size in PLOT_SIZE_INCHES)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(description)}" '
        f'width="{width}" height="{height}"><figcaption>{html.escape(description)}'
        "</figcaption></figure>"
    )


def html_report(runs: list[Run], groups: list[Group], plots: dict, compared: list) -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,"><title>Benchmark report</title>',
        f"<style>{HTML_STYLE}</style></head><body><h1>Benchmark report</h1>",
        f"<p>Runs: {html.escape('; '.join(run.description() for run in runs) or 'none')}. "
        f"Schema version {SCHEMA_VERSION}.</p><p>{html.escape(READING_GUIDE)}</p>",
    ]
    for task, task_groups, task_comparisons in by_task(groups, compared):
        parts.append(f"<h2>{html.escape(task or 'Other comparisons')}</h2>")
        for group in task_groups:
            parts.append(f'<section class="group"><h3>{html.escape(group.title)}</h3>')
            parts.append(group_html_table(group))
            parts.append(seeds_html_table(group))
            figures = [html_figure(description, path) for description, path in plots[group.key]]
            parts.append(f'<div class="figures">{"".join(figures)}</div></section>')
        parts.append(interleaved.html_section(task_comparisons, interleaved.TITLE))
    parts.append("<h2>Environments</h2>")
    for run in runs:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in environment_lines(run))
        parts.append(
            f'<h3>{html.escape(run.description())}</h3><ul class="environment">{items}</ul>'
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build_report(run_dirs: list[Path], out_dir: Path, comparison_dirs: list[Path] = ()) -> dict:
    """Merge the runs and write the report, with the interleaved comparisons found in the run
    directories and in `comparison_dirs`; returns {name: path} (plots: a list of paths)."""
    runs = [read_run(path) for path in find_run_dirs(run_dirs)] if run_dirs else []
    rows = merge_runs(runs)
    files = interleaved.find_comparisons([*run_dirs, *comparison_dirs])
    compared = interleaved.read_comparisons(files)
    if not rows and not compared:
        sources = [str(path) for path in [*run_dirs, *comparison_dirs]]
        raise ReportError(f"no rows and no comparison in {', '.join(sources)}")
    groups = group_rows(rows)
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for old in plots_dir.glob("*.png"):  # plots of an earlier report that may be gone now
        old.unlink()
    plots = {group.key: draw_plots(group, plots_dir) for group in groups}
    written = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "comparison_csv": out_dir / "comparison.csv",
        "runs_csv": out_dir / "runs.csv",
    }
    write_atomic(written["markdown"], markdown_report(runs, groups, plots, out_dir, compared))
    write_atomic(written["html"], html_report(runs, groups, plots, compared))
    write_pivot_csv(groups, written["comparison_csv"])
    write_runs_csv(groups, written["runs_csv"])
    if several_seeds(rows):
        written["seeds_csv"] = out_dir / "seeds.csv"
        write_seeds_csv(rows, written["seeds_csv"])
    elif (out_dir / "seeds.csv").exists():  # an earlier report's, of rows that may be gone now
        (out_dir / "seeds.csv").unlink()
    return written | {"plots": [path for group in groups for _, path in plots[group.key]]}


def default_out_dir(run_dirs: list[Path]) -> Path:
    """RUN_DIR/report for one run directory; <their common parent>/report for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / "report"
    parent = Path(os.path.commonpath([Path(p).resolve().parent for p in run_dirs]))
    return parent / "report"
