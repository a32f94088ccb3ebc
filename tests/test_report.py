"""`bench report` on a fixture of two machines' runs: tables, CSVs, plots, the HTML page in
headless Chromium, TensorBoard export, schema-version errors and the command line.

The fixture (tests/fixtures/report_runs/make_fixture.py) is written fresh for each session, from
bench.results' schema. The browser test needs Chromium (Debian: `apt-get install chromium`;
.ci/install-chromium does it in CI, where a missing browser fails the test instead of skipping).
"""

from __future__ import annotations

import argparse
import base64
import csv
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import report
from bench.results import COLUMNS, number, read_rows, read_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "report_runs" / "make_fixture.py"
# group keys: task, device, device name, threads (cpu only), precision, batch size, data
H100_BF16 = ("mnist_cnn", "cuda", "NVIDIA H100 80GB HBM3", "", "bf16", "64", "real")
H100_FP32 = ("mnist_cnn", "cuda", "NVIDIA H100 80GB HBM3", "", "fp32", "64", "real")
EPYC = "AMD EPYC 7B13 64-Core Processor"
XEON = "Intel(R) Xeon(R) Platinum 8480+"
EPYC_MNIST = ("mnist_cnn", "cpu", EPYC, "16", "fp32", "64", "real")
EPYC_SST2 = ("sst2_lstm", "cpu", EPYC, "16", "fp32", "64", "synthetic")
XEON_MNIST = ("mnist_cnn", "cpu", XEON, "16", "fp32", "64", "real")
GROUPS = (H100_BF16, H100_FP32, EPYC_MNIST, XEON_MNIST, EPYC_SST2)
PLOT_KINDS = ("throughput", "memory", "accuracy", "compile")


def load_fixture_builder():
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> list[Path]:
    return load_fixture_builder().build(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def built(run_dirs, tmp_path_factory) -> dict:
    return report.build_report(run_dirs, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def comparison(built) -> dict[tuple, dict[str, dict[str, str]]]:
    """{group key: {metric: {backend/mode: value}}} from comparison.csv."""
    tables: dict[tuple, dict[str, dict[str, str]]] = {}
    with open(built["comparison_csv"], newline="") as handle:
        for line in csv.DictReader(handle):
            key = tuple(line[c] for c in report.GROUP_COLUMNS)
            metric = line["metric"]
            cells = {k: v for k, v in line.items() if k not in (*report.GROUP_COLUMNS, "metric")}
            tables.setdefault(key, {})[metric] = {label: v for label, v in cells.items() if v}
    return tables


def fixture_row(run_dirs, cell_id: str) -> dict[str, str]:
    for run_dir in run_dirs:
        with open(run_dir / "results.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                if row["cell_id"] == cell_id:
                    return row
    raise KeyError(cell_id)


# ---------------------------------------------------------------------------- tables


def test_one_table_per_like_for_like_group(comparison):
    assert set(comparison) == set(GROUPS)
    assert comparison[H100_BF16]["status"] == {
        "torch/eager": "ok",
        "torch/compiled": "ok",
        "torch/fused": "ok",
        "jax/eager": "skipped",
        "jax/compiled": "ok",
        "jax/fused": "ok",
        "keras-tensorflow/compiled": "failed",  # no device name in its row: env.json's GPU
        "keras-torch/compiled": "oom",
    }
    assert comparison[EPYC_MNIST]["status"]["keras-tensorflow/compiled"] == "timeout"


def test_ranks_and_relative_speed_only_within_a_group(comparison, run_dirs):
    bf16 = comparison[H100_BF16]
    assert bf16["rank"] == {
        "jax/fused": "1",
        "torch/fused": "2",
        "jax/compiled": "3",
        "torch/compiled": "4",
        "torch/eager": "5",
    }
    fastest = float(fixture_row(run_dirs, "mnist_cnn-jax-cuda-bf16-fused-s0")["samples_per_s"])
    torch_fused = float(
        fixture_row(run_dirs, "mnist_cnn-torch-cuda-bf16-fused-s0")["samples_per_s"]
    )
    assert float(bf16["speed_vs_fastest"]["torch/fused"]) == pytest.approx(torch_fused / fastest)
    assert bf16["speed_vs_fastest"]["jax/fused"] == "1"
    # the same backend on other devices or precisions heads its own table
    assert comparison[H100_FP32]["rank"] == {"jax/compiled": "1", "torch/compiled": "2"}
    assert comparison[XEON_MNIST]["rank"] == {"torch/eager": "1"}
    assert comparison[EPYC_MNIST]["rank"]["jax/compiled"] == "1"


def test_rows_that_are_not_ok_are_shown_with_a_reason_but_never_ranked(comparison):
    for key in GROUPS:
        for label, status in comparison[key]["status"].items():
            ranked = label in comparison[key].get("rank", {})
            assert ranked == (status == "ok"), (key, label)
            assert (label in comparison[key].get("note", {})) == (status != "ok"), (key, label)
    notes = comparison[H100_BF16]["note"]
    assert notes["keras-tensorflow/compiled"] == (
        "worker exited with code 1: XlaRuntimeError: INTERNAL: ptxas exited with non-zero error "
        "code 65280"
    )
    assert "CUDA out of memory" in notes["keras-torch/compiled"]
    sst2 = comparison[EPYC_SST2]
    assert "samples_per_s" in sst2 and "keras-jax/compiled" in sst2["samples_per_s"]
    assert "keras-jax/compiled" not in sst2["speed_vs_fastest"]  # diverged: measured, unranked


def test_mfu_only_where_the_device_has_a_known_peak(comparison, run_dirs):
    row = fixture_row(run_dirs, "mnist_cnn-jax-cuda-bf16-fused-s0")
    mfu = float(comparison[H100_BF16]["mfu_pct"]["jax/fused"])
    assert mfu == pytest.approx(100 * float(row["train_tflops_per_s"]) * 1e12 / 989e12, rel=1e-5)
    row = fixture_row(run_dirs, "mnist_cnn-torch-cuda-fp32-compiled-s0")
    mfu = float(comparison[H100_FP32]["mfu_pct"]["torch/compiled"])
    assert mfu == pytest.approx(100 * float(row["train_tflops_per_s"]) * 1e12 / 67e12, rel=1e-5)
    for key in (EPYC_MNIST, XEON_MNIST, EPYC_SST2):
        assert "mfu_pct" not in comparison[key] or not comparison[key]["mfu_pct"]


def test_cpu_rows_with_other_thread_counts_are_not_like_for_like():
    row = {"task": "mnist_cnn", "device": "cpu", "device_name": EPYC, "threads": "4"}
    row |= {"precision": "fp32", "batch_size": "64", "data": "real"}
    assert report.group_key(row) != EPYC_MNIST
    assert report.group_key(row | {"threads": "16"}) == EPYC_MNIST
    gpu_row = row | {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "precision": "bf16"}
    assert report.group_key(gpu_row) == H100_BF16  # on a GPU the host's threads do not matter


def test_device_peaks_match_datasheet_names():
    assert report.device_peak_flops("cuda", "NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert report.device_peak_flops("cuda", "NVIDIA H100 80GB HBM3", "tf32") == 495e12
    assert report.device_peak_flops("cuda", "NVIDIA A100-SXM4-80GB", "fp32") == 19.5e12
    assert report.device_peak_flops("cuda", "NVIDIA A100 80GB PCIe", "tf32") == 156e12
    assert report.device_peak_flops("cuda", "NVIDIA H100 PCIe", "bf16") == 756e12
    assert report.device_peak_flops("cuda", "NVIDIA GeForce RTX 4090", "bf16") is None
    assert report.device_peak_flops("cpu", "NVIDIA H100 80GB HBM3", "bf16") is None


def test_markdown_names_each_tables_environment(built):
    text = built["markdown"].read_text()
    assert text.count("| # | backend | mode | status | samples/s |") == len(GROUPS)
    assert "### NVIDIA H100 80GB HBM3 (cuda) · bf16 · batch 64 · real data" in text
    assert (
        "### AMD EPYC 7B13 64-Core Processor (cpu, 16 threads) · fp32 · batch 64 · synthetic data"
        in text
    )
    h100 = text.split("### NVIDIA H100 80GB HBM3 (cuda) · bf16")[1].split("###")[0]
    assert "torch=2.13.0" in h100 and "jax=0.10.2" in h100
    assert "host: gpu-node-07 (run 20260310-091500, git 0cf3353a1b2c, driver 550.90.07)" in h100
    assert "cpu-box" not in h100
    assert "jax has no eager training loop worth timing \\| use compiled or fused" in h100
    assert "| 1 | jax | fused | ok | 336,842 |" in h100
    for link in re.findall(r"\]\((plots/[^)]+\.png)\)", text):
        assert (built["markdown"].parent / link).is_file()
    assert "## Environments" in text and "AMD EPYC 7B13" in text


def test_runs_csv_has_every_row_with_the_schema_and_derived_columns(built, run_dirs):
    with open(built["runs_csv"], newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [*COLUMNS, *report.DERIVED_COLUMNS]
    expected = sum(len(read_rows(run_dir / "results.csv")) for run_dir in run_dirs)
    assert len(rows) == expected == 19
    assert {row["host"] for row in rows} == {"gpu-node-07", "cpu-box"}


# ---------------------------------------------------------------------------- plots


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_plot_is_a_valid_png_of_the_fixed_size(built):
    from PIL import Image

    expected = {
        f"{report.Group(key, []).slug}--{kind}.png"
        for key in GROUPS
        for kind in PLOT_KINDS
        if not (key == EPYC_SST2 and kind == "accuracy")  # synthetic data: no accuracy
    }
    assert {path.name for path in built["plots"]} == expected
    for path in built["plots"]:
        assert png_size(path) == (800, 450)
        with Image.open(path) as image:
            image.verify()


def test_throughput_whiskers_of_single_window_and_rangeless_rows(run_dirs, tmp_path):
    """A row with one steady window has p10 = median = p90; the CSV's rounding can put p10 a
    hair above the median (a negative whisker, which matplotlib refuses); p10/p90 may be empty.
    The report draws them all: whiskers clipped at zero, none where there is no range."""
    from bench.report.plots import whisker_lengths

    run_dir = tmp_path / "runs" / run_dirs[1].name
    shutil.copytree(run_dirs[1], run_dir)
    with open(run_dir / "results.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    edits = {  # the EPYC MNIST group's three ok rows
        "torch": lambda m: (m, m),  # one steady window: p10 == median == p90
        "jax": lambda m: (m + 1e-12, m),  # p10 above the median by rounding
        "keras-jax": lambda m: ("", ""),  # no range at all
    }
    for row in rows:
        if row["task"] == "mnist_cnn" and row["backend"] in edits and row["status"] == "ok":
            median = float(row["step_time_median_ms"])
            row["samples_per_s"] = repr(64 / median * 1e3)
            p10, p90 = edits[row["backend"]](median)
            row.update(step_time_p10_ms=repr(p10) if p10 else "", step_time_p90_ms=repr(p90))
            row.update(steady_windows="1", step_time_p90_ms=repr(p90) if p90 else "")
    with open(run_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    built = report.build_report([run_dir], tmp_path / "report")
    slug = report.Group(EPYC_MNIST, []).slug
    assert tmp_path / "report" / "plots" / f"{slug}--throughput.png" in built["plots"]
    by_backend = {}
    for row in read_rows(run_dir / "results.csv"):
        if row["task"] == "mnist_cnn" and row["backend"] in edits and row["status"] == "ok":
            report.add_measures(row)
            by_backend[row["backend"]] = (number(row["samples_per_s"]), row)
    assert set(by_backend) == set(edits)
    for backend in ("torch", "jax"):
        median, row = by_backend[backend]
        assert row["samples_per_s_high"] <= median  # the whisker matplotlib refused
        (below,), (above,) = whisker_lengths(median, [row])
        assert below >= 0 and above == 0.0
    median, row = by_backend["keras-jax"]
    assert whisker_lengths(median, [row]) is None


# ---------------------------------------------------------------------------- HTML


def test_html_is_self_contained(built):
    page = built["html"].read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "no file or network references"
    assert "http://" not in page and "https://" not in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(data) for data in embedded) == sorted(
        path.read_bytes() for path in built["plots"]
    )
    for key in GROUPS:
        assert f'id="table-{report.Group(key, []).slug}"' in page


def find_chromium() -> str | None:
    names = (os.environ.get("BENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome")
    return next((shutil.which(name) for name in names if name and shutil.which(name)), None)


def load_in_chromium(page: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console messages it logged."""
    chromium = find_chromium()
    if chromium is None:
        message = (
            "no Chromium found: install it (Debian/Ubuntu: apt-get install chromium) or set "
            "BENCH_CHROMIUM to a Chromium/Chrome binary"
        )
        if os.environ.get("CI"):
            pytest.fail(message + "; CI installs it with .ci/install-chromium")
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
        command += ["--no-first-run", "--disable-background-networking"]
        command += ["--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        command += ["--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


# Appended to a copy of the page: after load, records each image's decoded size in the DOM.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const sizes = Array.from(document.images, (image) => `${image.naturalWidth}x${image.naturalHeight}`);
  document.body.setAttribute("data-image-sizes", sizes.join(","));
});
</script></body>"""


def test_html_loads_in_headless_chromium_without_console_errors(built, tmp_path):
    probed = tmp_path / "report.html"
    probed.write_text(built["html"].read_text().replace("</body>", IMAGE_PROBE))
    dom, console = load_in_chromium(probed)
    assert console == []
    sizes = re.search(r'data-image-sizes="([^"]*)"', dom)
    assert sizes, "the page's load event never ran"
    assert sizes.group(1).split(",") == ["800x450"] * len(built["plots"])
    for key in GROUPS:
        table_id = f"table-{report.Group(key, []).slug}"
        table = re.search(
            rf'<table class="comparison" id="{re.escape(table_id)}".*?</table>', dom, re.S
        )
        assert table, key
        assert table.group(0).count("<tr class=") >= 1
    assert dom.count('<table class="comparison"') == len(GROUPS)
    assert dom.count("<tr class=") == 19

    broken = tmp_path / "broken.html"  # the check above can see a console error at all
    broken.write_text("<!DOCTYPE html><title>x</title><script>console.error('broken')</script>")
    _, console = load_in_chromium(broken)
    assert any("broken" in line for line in console)


# ---------------------------------------------------------------------------- TensorBoard


def read_events(folder: Path, event_pb2) -> list:
    """Every Event in the folder's TFRecord files (length, crc, data, crc per record)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            events.append(event_pb2.Event.FromString(record))
    return events


def require_tensorboardx():
    """tensorboardX (imported as the report does, without torch), or skip."""
    if importlib.util.find_spec("tensorboardX") is None:
        pytest.skip("tensorboardX is not installed: pip install -e '.[tensorboard]'")
    return report.import_tensorboardx()


def test_tensorboard_export_writes_each_cells_history(run_dirs, tmp_path):
    require_tensorboardx()
    from tensorboardX.proto import event_pb2

    gpu_run = run_dirs[0]
    histories = sorted(gpu_run.glob("cells/*/history.csv"))
    assert report.export_tensorboard(gpu_run, tmp_path) == len(histories) == 8
    assert report.export_tensorboard(gpu_run, tmp_path) == 8  # again: replaces, not appends
    for history_path in histories:
        folder = tmp_path / gpu_run.name / history_path.parent.name
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1
        scalars: dict[str, dict[int, float]] = {}
        for event in read_events(folder, event_pb2):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
        history = read_rows(history_path)
        for entry in history:
            epoch = int(entry["epoch"])
            assert scalars["test/accuracy"][epoch] == pytest.approx(float(entry["test_accuracy"]))
            assert scalars["train/loss"][epoch] == pytest.approx(float(entry["train_loss"]))
            assert scalars["time/train_time_s"][epoch] == pytest.approx(
                float(entry["train_time_s"])
            )


def test_tensorboard_cells_without_accuracy_still_export(run_dirs, tmp_path):
    require_tensorboardx()
    assert report.export_tensorboard(run_dirs[1], tmp_path) == 6  # 5 ok + 1 diverged
    sst2 = tmp_path / run_dirs[1].name / "sst2_lstm-torch-cpu-fp32-eager-s0"
    assert list(sst2.glob("events.out.tfevents.*"))
    one = ["sst2_lstm-torch-cpu-fp32-eager-s0"]  # e.g. the cell that just finished
    assert report.export_tensorboard(run_dirs[1], tmp_path / "one", cell_ids=one) == 1


# ---------------------------------------------------------------------------- imports, CLI


def test_report_imports_no_framework_and_draws_lazily():
    code = "import sys, bench.report; print(','.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = {name.split(".")[0] for name in result.stdout.strip().split(",")}
    assert not loaded & {"torch", "jax", "tensorflow", "keras", "matplotlib", "tensorboardX"}
    modules = set(result.stdout.strip().split(","))
    assert not modules & {"bench.tasks", "bench.config", "bench.data", "backends"}


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("tensorboardX") is None,
    reason="needs torch and tensorboardX installed to show that torch stays out",
)
def test_tensorboard_export_keeps_torch_out(run_dirs, tmp_path):
    code = (
        "import sys; from pathlib import Path; from bench import report\n"
        f"report.export_tensorboard(Path({str(run_dirs[1])!r}), Path({str(tmp_path)!r}))\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_other_schema_version_is_an_error_with_exit_code_2(run_dirs, tmp_path, capsys):
    run_dir = tmp_path / "old-run"
    shutil.copytree(run_dirs[1], run_dir)
    text = (run_dir / "results.csv").read_text().splitlines()
    text[2] = "9" + text[2][1:]  # the second row claims schema version 9
    (run_dir / "results.csv").write_text("\n".join(text) + "\n")
    assert report.main([str(run_dirs[0]), str(run_dir), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("bench: error: ")
    assert "1 rows have schema_version 9 but this bench reads versions 1, 2, 3" in error
    assert not (tmp_path / "out").exists()


def test_rows_of_schema_version_1_are_still_read(run_dirs, tmp_path):
    """Version 2 only added columns at the end: a version-1 file reads them as empty."""
    run_dir = tmp_path / "v1-run"
    shutil.copytree(run_dirs[1], run_dir)
    added = ("calib_matmul_ms", "calib_dispatch_ms", "test_hooks")
    rows = read_rows(run_dir / "results.csv")
    with open(run_dir / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, [c for c in COLUMNS if c not in added], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(row | {"schema_version": "1"} for row in rows)
    run = read_run(run_dir)
    assert len(run.rows) == len(rows) and run.rows["calib_matmul_ms"].isna().all()


@pytest.mark.parametrize("name", ["missing", "empty"])
def test_a_folder_without_runs_is_an_error(name, tmp_path, capsys):
    if name == "empty":
        (tmp_path / name).mkdir()
    assert report.main([str(tmp_path / name)]) == 2
    assert capsys.readouterr().err.startswith("bench: error: ")


def test_a_folder_of_runs_stands_for_them_and_default_out(run_dirs, tmp_path):
    parent = run_dirs[0].parent
    assert report.find_run_dirs([parent]) == sorted(run_dirs)
    assert report.default_out_dir(run_dirs) == parent.resolve() / "report"
    assert report.default_out_dir(run_dirs[:1]) == run_dirs[0] / "report"


def test_bench_report_subcommand(run_dirs, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="bench")
    report.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run_dirs[1]), "--out", str(tmp_path / "one")])
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {
        "report": str(tmp_path / "one" / "report.html"),
        "runs": 1,
        "plots": 7,
        "tensorboard_cells": None,
    }
