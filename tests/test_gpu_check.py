"""tests/gpu_check.py (`make gpu-check`): its pure helpers, and one end-to-end run on the CPU.

The fast tests build their inputs by hand: a Chrome/perfetto trace like the one
jax.profiler writes, results.csv rows, sync-warning counts, a fake clock. The slow test runs the
whole check with --device cpu on real data, where every cuda-only check must say "skipped"
(never "pass") and the fp32 logits check must pass for torch and jax.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import gpu_check
import pytest
from gpu_check import (
    Budget,
    SyncRecorder,
    device_spans,
    find_perfetto_trace,
    judge_memory,
    judge_phase,
    judge_run_row,
    judge_sync,
    judge_timing,
    load_trace,
    run_with_deadline,
    trace_pairs,
)

HERE = Path(__file__).resolve().parent

# --- the perfetto trace parser ------------------------------------------------------------------


def synthetic_trace() -> dict:
    """Two window markers on the host; GPU events in, between and after them; host noise."""
    host, gpu, other_gpu = 701, 1, 2
    return {
        "displayTimeUnit": "ns",
        "traceEvents": [
            {"ph": "M", "pid": host, "name": "process_name", "args": {"name": "/host:CPU"}},
            {"ph": "M", "pid": gpu, "name": "process_name", "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "pid": other_gpu, "name": "process_name", "args": {"name": "GPU 1 x"}},
            {
                "ph": "X",
                "pid": host,
                "tid": 5,
                "ts": 100.0,
                "dur": 1000.0,
                "name": "gpu_check_window_0",
            },
            {
                "ph": "X",
                "pid": host,
                "tid": 5,
                "ts": 1200.0,
                "dur": 1000.0,
                "name": "gpu_check_window_1",
            },
            {"ph": "X", "pid": host, "tid": 5, "ts": 50.0, "dur": 5000.0, "name": "host work"},
            {"ph": "X", "pid": gpu, "tid": 9, "ts": 150.0, "dur": 100.0, "name": "kernel a"},
            {"ph": "X", "pid": gpu, "tid": 9, "ts": 900.0, "dur": 150.0, "name": "kernel b"},
            {"ph": "X", "pid": gpu, "tid": 9, "ts": 1250.0, "dur": 100.0, "name": "kernel c"},
            # starts inside window 1, ends after its marker: the span must include it
            {"ph": "X", "pid": other_gpu, "tid": 3, "ts": 2100.0, "dur": 300.0, "name": "copy"},
            {"ph": "X", "pid": gpu, "tid": 9, "ts": 10.0, "dur": 20.0, "name": "before any"},
            {"ph": "i", "pid": gpu, "ts": 500.0, "name": "instant"},
        ],
    }


def test_device_spans_per_window_from_a_synthetic_trace():
    spans = device_spans(synthetic_trace())
    assert spans["device_processes"] == ["/device:GPU:0", "GPU 1 x"]
    assert "/host:CPU" in spans["processes"]
    first, second = spans["windows"]
    assert (first["index"], first["events"]) == (0, 2)
    assert first["span_s"] == pytest.approx((1050 - 150) / 1e6)
    assert first["marker_s"] == pytest.approx(1000 / 1e6)
    assert (second["index"], second["events"]) == (1, 2)
    assert second["span_s"] == pytest.approx((2400 - 1250) / 1e6)
    assert first["head_s"] == pytest.approx(50 / 1e6) and first["tail_s"] == pytest.approx(50 / 1e6)
    assert second["tail_s"] == pytest.approx(-200 / 1e6)  # the copy ran past the marker


def test_trace_pairs_and_timing_judgement_from_the_trace():
    spans = device_spans(synthetic_trace())
    pairs, why = trace_pairs(spans, [0.000910, 0.001160])
    assert why == "" and len(pairs) == 2
    status, measured = judge_timing(pairs)
    assert status == "pass" and measured["windows"] == 2
    status, measured = judge_timing(trace_pairs(spans, [0.000910, 0.0010])[0])
    assert status == "fail" and measured["worst_dev_pct"] == pytest.approx(15.0)


def test_a_trace_without_gpu_processes_is_not_measured():
    trace = synthetic_trace()
    trace["traceEvents"] = [
        e for e in trace["traceEvents"] if e.get("pid") == 701 or e.get("ph") == "M"
    ]
    for event in trace["traceEvents"]:
        if event.get("pid") != 701:
            event["args"] = {"name": "/host:python"}
    pairs, why = trace_pairs(device_spans(trace), [0.001, 0.001])
    assert pairs == [] and "no GPU device events" in why
    status, _ = judge_timing(pairs)
    assert status.startswith("not run: not measured")


def test_the_trace_file_is_found_and_read_where_jax_writes_it(tmp_path):
    # jax 0.10.2 writes <dir>/plugins/profile/<YYYY_MM_DD_HH_MM_SS>/perfetto_trace.json.gz
    # beside <host>.xplane.pb and <host>.trace.json.gz (checked on this machine's CPU)
    run = tmp_path / "plugins" / "profile" / "2026_12_01_09_43_19"
    run.mkdir(parents=True)
    (run / "vm.xplane.pb").write_bytes(b"")
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as handle:
        json.dump(synthetic_trace(), handle)
    path = find_perfetto_trace(tmp_path)
    assert path == run / "perfetto_trace.json.gz"
    assert len(device_spans(load_trace(path))["windows"]) == 2
    with gzip.open(run / "perfetto_trace.json.gz", "wt") as handle:  # the array form too
        json.dump(synthetic_trace()["traceEvents"], handle)
    assert len(device_spans(load_trace(path))["windows"]) == 2
    assert find_perfetto_trace(tmp_path / "nothing") is None


def test_timing_judgement_on_event_pairs():
    assert judge_timing([(0.010, 0.0104), (0.010, 0.0098)])[0] == "pass"
    status, measured = judge_timing([(0.010, 0.0104), (0.010, 0.0120)])
    assert status == "fail" and measured["worst_dev_pct"] == pytest.approx(20.0)
    assert judge_timing([(0.010, 0.0094)])[0] == "fail"  # too short counts too


# --- sync counting ------------------------------------------------------------------------------


def test_sync_judgement_for_torch_and_keras():
    one = {10: {"main": 1, "other": 0}, 30: {"main": 1, "other": 0}}
    assert judge_sync("torch", one) == ("pass", "")
    status, why = judge_sync("torch", {10: {"main": 1, "other": 0}, 30: {"main": 2, "other": 0}})
    assert status == "fail" and "2 main-thread syncs in 30 steps" in why
    assert judge_sync("torch", {10: {"main": 0, "other": 0}, 30: {"main": 0, "other": 0}})[0] == (
        "fail"
    )
    flat = {10: {"main": 3, "other": 10}, 30: {"main": 3, "other": 30}}
    assert judge_sync("keras-torch", flat) == ("pass", "")  # other threads may grow
    status, why = judge_sync(
        "keras-torch", {10: {"main": 3, "other": 0}, 30: {"main": 9, "other": 0}}
    )
    assert status == "fail" and "grow" in why


def test_sync_recorder_counts_by_thread_and_never_deduplicates():
    def warn_sync() -> None:
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)

    with SyncRecorder() as recorder:
        for _ in range(3):
            warn_sync()  # the same place three times: "always", not once
        warnings.warn("something else", UserWarning, stacklevel=1)
        worker = threading.Thread(target=warn_sync, name="ThreadPoolExecutor-0_0")
        worker.start()
        worker.join()
        fit = threading.Thread(target=warn_sync, name="keras")  # Keras' steps run there
        fit.start()
        fit.join()
    counts = recorder.counts()
    assert (counts["main"], counts["other"]) == (4, 1)
    assert counts["other_where"][0].startswith("ThreadPoolExecutor-0_0: ")
    assert warnings.showwarning != recorder.show  # put back


# --- judging results.csv rows -------------------------------------------------------------------


def ok_row(**changes) -> dict:
    row = {
        "cell_id": "mnist_cnn-torch-cuda-fp32-eager-s0",
        "task": "mnist_cnn",
        "backend": "torch",
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "precision": "fp32",
        "mode": "eager",
        "status": "ok",
        "error": "",
        "step_time_median_ms": "1.5",
        "step_time_p10_ms": "1.4",
        "step_time_p90_ms": "1.7",
        "samples_per_s": "42000",
        "final_test_accuracy": "0.97",
        "params": "225034",
        "peak_alloc_mb": "250.5",
        "peak_nvml_mb": "700",
        "data_resident_mb": "210",
        "nvml_source": "process",
    }
    row.update(changes)
    return row


def test_run_rows_pass_fail_and_skip():
    assert judge_run_row(ok_row(), "cuda", 0.95)["status"] == "pass"
    skipped = ok_row(status="skipped", error="Keras' torch backend has no steps_per_execution")
    assert judge_run_row(skipped, "cuda", 0.95)["status"].startswith("skipped: Keras'")
    unexplained = judge_run_row(ok_row(status="skipped", error=""), "cuda", 0.95)
    assert unexplained["status"] == "fail"
    failed = judge_run_row(ok_row(status="timeout", error="no result within 150 s"), "cuda", 0.95)
    assert failed["status"] == "fail" and "timeout" in failed["detail"]
    on_cpu = judge_run_row(ok_row(device_name="AMD EPYC 7B13"), "cuda", 0.95)
    assert on_cpu["status"] == "fail" and "not a GPU" in on_cpu["detail"]
    assert judge_run_row(ok_row(device_name="AMD EPYC 7B13"), "cpu", 0.95)["status"] == "pass"
    known = ["NVIDIA H100 80GB HBM3"]
    assert (
        judge_run_row(ok_row(device_name="NVIDIA H100 80GB HBM3"), "cuda", 0.95, known)["status"]
        == "pass"
    )
    assert judge_run_row(ok_row(), "cuda", 0.95, known)["status"] == "fail"  # H200 is not H100
    assert judge_run_row(ok_row(device_name=""), "cuda", 0.95)["status"] == "fail"
    low = judge_run_row(ok_row(final_test_accuracy="0.90"), "cuda", 0.95)
    assert low["status"] == "fail" and "acc" in low["detail"]
    assert judge_run_row(ok_row(final_test_accuracy="0.90"), "cuda", None)["status"] == "pass"
    empty = judge_run_row(ok_row(step_time_p90_ms=""), "cuda", 0.95)
    assert empty["status"] == "fail" and "step_time_p90_ms" in empty["detail"]


def test_memory_plausibility():
    assert judge_memory(ok_row(), "cuda", 143771)["status"] == "pass"
    assert judge_memory(ok_row(), "cpu", None)["status"] == "skipped: needs cuda"
    assert judge_memory(ok_row(status="skipped"), "cuda", 143771)["status"].startswith("skipped")
    assert judge_memory(ok_row(status="failed"), "cuda", 143771)["status"].startswith("not run")
    tiny = judge_memory(ok_row(peak_alloc_mb="2.0"), "cuda", 143771)  # < 225,034 * 12 B
    assert tiny["status"] == "fail" and "params*12 B" in tiny["detail"]
    huge = judge_memory(ok_row(peak_alloc_mb="200000"), "cuda", 143771)
    assert huge["status"] == "fail" and "device's" in huge["detail"]
    for column in ("peak_alloc_mb", "peak_nvml_mb", "data_resident_mb"):
        result = judge_memory(ok_row(**{column: ""}), "cuda", 143771)
        assert result["status"] == "fail" and column in result["detail"]
    for column in ("data_resident_mb", "nvml_source"):
        row = ok_row()
        del row[column]
        result = judge_memory(row, "cuda", 143771)
        assert result["status"] == "fail" and f"{column}: column missing" in result["detail"]
    odd = judge_memory(ok_row(nvml_source="guess"), "cuda", 143771)
    assert odd["status"] == "fail" and "nvml_source" in odd["detail"]


def test_cells_without_a_row_are_not_run_or_failed():
    cells = gpu_check.expected_cells("mnist_cnn", ["torch", "jax"], "cuda", ["fp32"], ["eager"])
    assert [c.cell_id for c in cells] == [
        "mnist_cnn-torch-cuda-fp32-eager-s0",
        "mnist_cnn-jax-cuda-fp32-eager-s0",
    ]
    records = judge_phase(cells, [ok_row()], "cuda", 0.95, 143771, lambda c: "not run: time budget")
    assert [r["status"] for r in records] == [
        "pass",
        "pass",
        "not run: time budget",
        "not run: the run has no row",
    ]
    records = judge_phase(cells, [], "cuda", 0.95, None, lambda c: "fail: no row; exited with 2")
    assert records[0]["status"] == "fail" and records[0]["detail"] == "no row; exited with 2"
    assert gpu_check.summary(records)["fail"] == 2


def test_outcomes_never_count_an_unknown_status_as_a_pass():
    assert gpu_check.outcome({"status": "pass"}) == "pass"
    assert gpu_check.outcome({"status": "not run: time budget"}) == "not run"
    assert gpu_check.outcome({"status": "skipped: needs cuda"}) == "skipped"
    assert gpu_check.outcome({"status": "passed?"}) == "fail"


# --- the budget ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_bookkeeping_with_a_fake_clock():
    clock = FakeClock()
    budget = Budget(100, clock=clock)
    assert budget.allows() and budget.remaining() == 100
    clock.now += 85
    assert budget.elapsed() == 85 and budget.allows(15) and not budget.allows(16)
    clock.now += 30
    assert budget.remaining() == 0 and not budget.allows(0.001)
    assert gpu_check.not_run_budget() == "not run: time budget"
    assert gpu_check.not_run_budget(in_flight=True).startswith("not run: time budget (")


def test_a_spent_budget_runs_nothing_and_says_so(tmp_path):
    clock = FakeClock()
    budget = Budget(5, clock=clock)
    clock.now += 10
    records = gpu_check.run_probe("torch", "cpu", None, tmp_path, budget)
    assert records and all(r["status"] == "not run: time budget" for r in records)
    assert not (tmp_path / "probes").exists()


def test_run_with_deadline_stops_a_command_at_the_budget(tmp_path):
    budget = Budget(1.0)
    started = time.monotonic()
    code, stopped = run_with_deadline(
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        tmp_path / "log.txt",
        budget,
        limit_s=30,
        echo=False,
    )
    assert stopped == "budget" and code != 0
    assert time.monotonic() - started < 15
    assert "started" in (tmp_path / "log.txt").read_text()
    code, stopped = run_with_deadline(
        [sys.executable, "-c", "pass"], tmp_path / "log2.txt", Budget(60), limit_s=30, echo=False
    )
    assert (code, stopped) == (0, None)


def test_folder_names():
    gpus = [{"name": "NVIDIA H200", "driver": "580", "memory_mib": "143771"}]
    assert gpu_check.device_slug("cuda", gpus) == "nvidia-h200"
    assert gpu_check.device_slug("cpu", gpus) == "cpu"
    assert gpu_check.slug("Tesla V100-SXM2-16GB") == "tesla-v100-sxm2-16gb"


def test_run_folder_does_not_overwrite_an_earlier_run(tmp_path):
    import datetime

    day = datetime.date(2026, 12, 1)
    first = gpu_check.run_folder(tmp_path, "cpu", [], day)
    assert first == tmp_path / "2026-12-01-cpu"
    first.mkdir()
    assert gpu_check.run_folder(tmp_path, "cpu", [], day) == first  # empty: reused
    (first / "check.json").write_text("{}")
    assert gpu_check.run_folder(tmp_path, "cpu", [], day) == tmp_path / "2026-12-01-cpu-2"


def test_the_bench_run_flags_it_uses_exist():
    flags = gpu_check.bench_run_flags()
    cells = gpu_check.expected_cells("mnist_cnn", ["torch"], "cuda", ["fp32"], ["eager"])
    command = gpu_check.matrix_command("mnist", Path("/tmp/x"), cells, 401, "/data", flags)
    assert command[command.index("--train-limit") + 1] == "25664"
    assert "--window-steps" not in command  # the default 25-step windows at full size
    short = gpu_check.matrix_command("mnist", Path("/tmp/x"), cells, 40, None, flags)
    assert short[short.index("--window-steps") + 1] == "5"


def test_the_resnet_part_runs_bf16_batch_256_on_the_synthetic_twin():
    cells_by_backend = gpu_check.resnet_cells(["torch", "jax", "keras-jax"], "cuda")
    assert [[c.mode for c in cells] for cells in cells_by_backend] == [
        ["default", "compiled", "fused"],
        ["default", "fused"],
        ["default"],
    ]
    cells = cells_by_backend[0]
    assert all(c.batch_size == 256 and c.precision == "bf16" for c in cells)
    flags = gpu_check.bench_run_flags()
    command = gpu_check.matrix_command("resnet-torch", Path("/tmp/x"), cells, 150, "/data", flags)
    option = {flag: command[command.index(flag) + 1] for flag in command if flag.startswith("--")}
    assert option["--batch-size"] == "256" and option["--train-limit"] == str(150 * 256)
    assert option["--data"] == "synthetic" and "--data-dir" not in option
    assert option["--mode"] == "default,compiled,fused" and option["--window-steps"] == "15"


def test_the_resnet_goal_judges_the_fastest_ok_row():
    rows = [
        ok_row(task="cifar10_resnet18", backend="torch", samples_per_s="60000"),
        ok_row(task="cifar10_resnet18", backend="jax", samples_per_s="81000"),
        ok_row(task="cifar10_resnet18", backend="keras-jax", samples_per_s="90000")
        | {"status": "failed"},
    ]
    goal = gpu_check.judge_resnet_goal(rows)
    assert (goal["status"], goal["backend"], goal["measured"]["samples_per_s"]) == (
        "pass",
        "jax",
        81000,
    )
    assert gpu_check.judge_resnet_goal(rows[:1])["status"] == "fail"
    assert gpu_check.judge_resnet_goal([])["status"].startswith("not run")


# --- end to end on the CPU ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_whole_check_on_cpu(tmp_path):
    data_dir = os.environ.get("BENCH_DATA_DIR")
    if not data_dir or not (Path(data_dir) / "mnist").is_dir():
        pytest.skip("real MNIST is needed: BENCH_DATA_DIR=../shared/datasets")
    command = [sys.executable, str(HERE / "gpu_check.py"), "--device", "cpu"]
    # one backend, and the modes that need no torch.compile (its cold compile on a CPU takes
    # longer than the rest of the check): the check's plumbing is the same for each (the
    # per-backend parts are the contract's and parity's probes, which every backend runs in the
    # default test run)
    command += ["--backends", "torch", "--steps", "24", "--precisions", "fp32"]
    command += ["--modes", "eager,fused"]
    # not the ResNet-18 part: batch-256 steps take seconds each on a CPU (its plumbing is the
    # same `bench run` phase; its command and goal: the tests below)
    command += ["--parts", "probes,text,mnist"]
    command += ["--out", str(tmp_path), "--copy-to", str(tmp_path / "copy")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (folder,) = [p for p in tmp_path.iterdir() if p.name.endswith("-cpu")]
    for name in ("check.json", "CHECK.md", "mnist/results.csv", "text/results.csv"):
        assert (folder / name).is_file(), name
    for name in ("check.json", "CHECK.md", f"{folder.name}.tar.gz"):
        assert (tmp_path / "copy" / name).is_file(), name
    records = json.loads((folder / "check.json").read_text())["records"]
    cuda_only = [r for r in records if r["name"] in ("timing", "sync count", "fused vs eager")]
    cuda_only += [r for r in records if r["name"] == "memory"]
    assert cuda_only and all(r["status"].startswith("skipped") for r in cuda_only)
    logits = {(r["backend"], r["task"]): r["status"] for r in records if r["name"] == "fp32 logits"}
    assert logits == {("torch", task): "pass" for task in ("mnist_cnn", "sst2_lstm")}
    runs = [r for r in records if r["name"] == "run"]
    assert len(runs) == 2 + 1  # MNIST: 2 modes (fp32); SST-2: its default mode
    assert all(gpu_check.outcome(r) in ("pass", "skipped") for r in runs)
    assert "| check |" in (folder / "CHECK.md").read_text()
    assert "gpu-check:" in result.stdout.splitlines()[-1]


def test_outputs_hold_every_record_and_each_threshold_once(tmp_path):
    records = [
        judge_run_row(ok_row(), "cuda", 0.95),
        judge_memory(ok_row(), "cuda", 143771),
        judge_memory(ok_row(task="sst2_lstm", params="2700000"), "cuda", 143771),
        gpu_check.record("backend", backend="keras-tensorflow", status="skipped: not installed"),
    ]
    env = {"gpus": [{"name": "NVIDIA H200"}], "cpu": "x", "device": "cuda", "command": "c"}
    env |= {"git_sha": "abc", "python": "3.12", "packages": {"torch": "2.11.0"}}
    rows = [ok_row()]
    gpu_check.write_outputs(tmp_path, records, env, {"mnist": ("MNIST", rows)}, Budget(450))
    markdown = (tmp_path / "CHECK.md").read_text()
    table = gpu_check.records_table(records)
    assert table in markdown and len(table.strip().splitlines()) == 2 + len(records)
    assert markdown.count("- memory: ") == 1 and "- run: " in markdown
    assert "## MNIST (`mnist/results.csv`)" in markdown and "NVIDIA H200" in markdown
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["summary"] == {"pass": 3, "fail": 0, "skipped": 1, "not run": 0}
    assert all(r["threshold"] for r in saved["records"][:3])  # each record keeps its own


def test_probe_plans_name_each_check_once_per_backend():
    for backend in ("torch", "jax", "keras-jax", "keras-torch", "keras-tensorflow"):
        plan = gpu_check.probe_plan(backend)
        assert [item["index"] for item in plan] == list(range(len(plan)))
        keys = [(item["name"], item["task"], item["mode"]) for item in plan]
        assert len(set(keys)) == len(keys)
        assert {item["task"] for item in plan if item["name"] == "fp32 logits"} == {
            "mnist_cnn",
            "sst2_lstm",
        }
    torch_checks = {(i["name"], i["mode"]) for i in gpu_check.probe_plan("torch")}
    assert ("timing", "fused") in torch_checks and ("sync count", "compiled") in torch_checks
    assert ("timing", "compiled") in {(i["name"], i["mode"]) for i in gpu_check.probe_plan("jax")}
