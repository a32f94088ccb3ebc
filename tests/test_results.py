"""The results layer: rows written and read back checked and typed, the one final-row rule,
results.md's like-for-like tables and the table renderers."""

from __future__ import annotations

import csv
import subprocess
import sys

import pandas as pd
import pytest

from bench.results import (
    COLUMNS,
    INTEGER_COLUMNS,
    TEXT_COLUMNS,
    Column,
    ResultsError,
    append_row,
    empty_row,
    fill_device_names,
    html_table,
    latest_per_cell,
    markdown,
    markdown_table,
    read_results,
    read_rows,
    read_run,
    records,
    text_table,
)


def row(cell_id: str, **values) -> dict:
    base = {"cell_id": cell_id, "task": "mnist_cnn", "backend": "torch", "device": "cpu"}
    base |= {"device_name": "EPYC", "threads": 2, "precision": "fp32", "mode": "eager"}
    base |= {"batch_size": 64, "seed": 0, "data": "real", "status": "ok"}
    return empty_row() | base | values


@pytest.fixture
def results_csv(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, row("a", samples_per_s=1000.5, params=347146, error=None))
    append_row(path, row("b", status="failed", error="RuntimeError: boom"))
    append_row(path, row("a", samples_per_s=1200.0, attempt=2))  # a's retry: its final row
    return path


def test_rows_read_back_typed_with_empty_as_na(results_csv):
    frame = read_results(results_csv)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3
    for name in COLUMNS:
        kind = frame[name].dtype
        if name in TEXT_COLUMNS:
            assert isinstance(kind, pd.StringDtype), name
        elif name in INTEGER_COLUMNS:
            assert kind == "Int64", name
        else:
            assert kind == "float64", name
    assert frame["params"][0] == 347146 and frame["samples_per_s"][0] == 1000.5
    assert frame["error"].isna()[0] and frame["error"][1] == "RuntimeError: boom"
    assert frame["peak_alloc_mb"].isna().all() and frame["params"].isna()[1]
    first = records(frame)[0]
    assert first["params"] == 347146 and type(first["params"]) is int
    assert first["task"] == "mnist_cnn" and first["error"] is None and first["compile_s"] is None


def test_latest_per_cell_keeps_each_cells_last_row_in_first_seen_order(results_csv):
    final = latest_per_cell(read_results(results_csv))
    assert list(final["cell_id"]) == ["a", "b"]
    assert list(final["samples_per_s"].fillna(0)) == [1200.0, 0] and final["attempt"][0] == 2
    frame = read_results(results_csv)
    frame.loc[[0, 1], "cell_id"] = pd.NA  # rows without an id are never merged
    assert len(latest_per_cell(frame)) == 3


def test_a_file_of_an_older_schema_reads_the_newer_columns_as_empty(results_csv, tmp_path):
    added = ("calib_matmul_ms", "calib_dispatch_ms", "test_hooks", "data_resident_mb")
    old = tmp_path / "v1.csv"
    with open(old, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, [c for c in COLUMNS if c not in added], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(r | {"schema_version": "1"} for r in read_rows(results_csv))
    frame = read_results(old)
    assert list(frame.columns) == list(COLUMNS)
    assert all(frame[c].isna().all() for c in added) and set(frame["schema_version"]) == {1}


def test_columns_beyond_the_schema_are_kept_as_text(tmp_path):
    path = tmp_path / "base.csv"
    lines = [",".join([*COLUMNS, "steady_step_ms"])]
    lines.append(",".join(["3", "r", "c", *[""] * (len(COLUMNS) - 3), "1.5 2.5"]))
    path.write_text("\n".join(lines) + "\n")
    frame = read_results(path, required=())
    assert list(frame.columns) == [*COLUMNS, "steady_step_ms"]
    assert frame["steady_step_ms"][0] == "1.5 2.5"


def broken(results_csv, name: str) -> str:
    lines = results_csv.read_text().splitlines()
    if name == "other-version":
        return "\n".join([lines[0], lines[1], "9" + lines[2][1:], "7" + lines[3][1:]])
    if name == "no-version":
        return "just some words\nand more"
    if name == "lacks-columns":
        return "schema_version,cell_id\n3,a"
    if name == "torn-line":
        return "\n".join([*lines[:2], lines[2][:40]])
    if name == "extra-field":
        return "\n".join([*lines[:2], lines[2] + ",surplus"])
    if name == "not-a-number":
        return "\n".join([lines[0], lines[1].replace(",1000.5,", ",fast,")])
    if name == "not-whole":
        return "\n".join([lines[0], lines[1].replace(",347146,", ",3.5,")])
    raise KeyError(name)


@pytest.mark.parametrize(
    "name, message",
    [
        ("other-version", "2 rows have schema_version 7, 9 but this bench reads versions 1, 2, 3"),
        ("no-version", "has no schema_version column"),
        ("lacks-columns", "lacks the columns task, device, device_name, threads"),
        ("torn-line", ", line 3: "),
        (
            "extra-field",
            f"{len(COLUMNS) + 1} fields where the header has {len(COLUMNS)}: a malformed",
        ),
        ("not-a-number", ", row a: samples_per_s is 'fast', not a number"),
        ("not-whole", ", row a: params is '3.5', not a whole number"),
    ],
)
def test_bad_results_raise_one_clear_error(name, message, results_csv, tmp_path):
    path = tmp_path / f"{name}.csv"
    path.write_text(broken(results_csv, name) + "\n")
    with pytest.raises(ResultsError) as caught:
        read_results(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_and_empty_files(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ResultsError, match="not a text CSV file"):
        read_results(binary)
    with pytest.raises(ResultsError, match="cannot read .*nowhere.csv: No such file"):
        read_results(tmp_path / "nowhere.csv")
    (tmp_path / "empty.csv").write_text("")
    frame = read_results(tmp_path / "empty.csv")  # what the runner leaves when it drops rows
    assert frame.empty and list(frame.columns) == list(COLUMNS)


def test_a_run_directory_and_device_names_from_its_environment(results_csv):
    (results_csv.parent / "env.json").write_text('{"hostname": "box", "cpu": "AMD EPYC 7B13"}')
    run = read_run(results_csv.parent)
    assert list(run.rows["cell_id"]) == ["a", "b"] and run.host == "box"
    rows = run.rows.copy()
    rows.loc[1, "device_name"] = pd.NA
    assert list(fill_device_names(rows, run.environment)["device_name"]) == [
        "EPYC",
        "AMD EPYC 7B13",
    ]
    assert rows["device_name"].isna()[1], "the frame given is left as it was"


def test_writing_rows_imports_no_pandas_and_reading_does():
    code = (
        "import sys, bench.results, bench.worker, bench.cell, bench.config\n"
        "print('pandas' in sys.modules)\n"
        "bench.results.read_results\n"
        "print('pandas' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------------------- results.md


def test_results_md_ranks_rows_only_within_their_like_for_like_group():
    rows = [
        row("slow-cpu", samples_per_s=900.0),
        row("fast-cpu", samples_per_s=1000.0, backend="jax"),
        row("other-threads", samples_per_s=5000.0, threads=16),
        row("gpu-bf16", samples_per_s=90000.0, device="cuda", device_name="H100", precision="bf16"),
        row("gpu-bf16-b128", samples_per_s=99000.0, device="cuda", device_name="H100",
            precision="bf16", batch_size=128),
        row("failed", status="failed", error="Traceback\nRuntimeError: boom", backend="jax"),
        row("synthetic", samples_per_s=2000.0, data="synthetic"),
    ]  # fmt: skip
    table = markdown_table(rows)
    headings = [line for line in table.splitlines() if line.startswith("### ")]
    assert headings == [
        "### mnist_cnn · H100 (cuda) · bf16 · batch 64 · real data",
        "### mnist_cnn · H100 (cuda) · bf16 · batch 128 · real data",
        "### mnist_cnn · EPYC (cpu, 2 threads) · fp32 · batch 64 · real data",
        "### mnist_cnn · EPYC (cpu, 2 threads) · fp32 · batch 64 · synthetic data",
        "### mnist_cnn · EPYC (cpu, 16 threads) · fp32 · batch 64 · real data",
    ]
    cpu = table.split(headings[2])[1].split("###")[0]
    body = [line for line in cpu.splitlines() if line.startswith("| mnist_cnn")]
    assert [line.split(" | ")[1] for line in body] == ["jax", "torch", "jax"]  # fastest first
    assert "| failed |" in body[2] and "- `failed`: failed: RuntimeError: boom" in cpu
    assert "5,000.0" not in cpu and "2,000.0" not in cpu  # other groups' rows stay out


def test_results_md_is_the_same_from_typed_rows_text_rows_and_a_frame(results_csv):
    frame = latest_per_cell(read_results(results_csv))
    text_rows = list({r["cell_id"]: r for r in read_rows(results_csv)}.values())
    assert markdown_table(frame) == markdown_table(records(frame)) == markdown_table(text_rows)
    assert "| mnist_cnn | torch | cpu | fp32 | eager | ok | 1,200 |" in markdown_table(frame)


# ---------------------------------------------------------------------------- renderers

COLUMNS_SPEC = (
    Column("name", "name", numeric=False),
    Column("speed", "speed", lambda v: f"{v:,.0f}"),
)
ROWS = [{"name": "a|b", "speed": 1234.5, "status": "ok"}, {"name": "c", "speed": None}]


def test_renderers_share_the_column_specs():
    assert markdown(COLUMNS_SPEC, ROWS) == (
        "| name | speed |\n|---|---:|\n| a\\|b | 1,234 |\n| c | – |\n"
    )
    assert text_table(COLUMNS_SPEC, ROWS) == "name  speed\n----  -----\na|b   1,234\nc         -"
    page = html_table(COLUMNS_SPEC, ROWS, caption="x < y", table_id="t")
    assert page.startswith('<table class="comparison" id="t"><caption>x &lt; y</caption>')
    assert '<tr class="ok"><td class="text">a|b</td><td class="number">1,234</td></tr>' in page
