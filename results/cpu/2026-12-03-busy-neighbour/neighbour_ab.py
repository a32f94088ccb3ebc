"""Does a busy second vCPU slow a run on the first? Windows with the neighbour running against
windows with it stopped, interleaved in ABBA/BAAB blocks inside each measuring process.

    python neighbour_ab.py PROCESSES BLOCKS OUT.json

The measured side: a bare torch loop (the MNIST CNN of bench/tasks.py built by the harness's
torch backend, synthetic batches of 64, Adam, 1 thread), pinned to CPU 0, timing windows of
WINDOW steps. The neighbour: the same loop, pinned to CPU 1, never timed; between windows it is
let run (SIGCONT, side B) or stopped (SIGSTOP, side A), and the window starts once the
neighbour has run (or stood) for SETTLE s. Per block, the ratio of the B windows' median to the
A windows'; per process, the blocks' median ratio; across the fresh measuring processes, their
mean with a t-interval (scipy.stats), the process being the unit of replication, as in
`bench compare`. Writes every window to OUT.json.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WINDOW = 30
SETTLE = 0.3
WARMUP = 3  # windows before the blocks, neighbour stopped


def loop_steps():
    """A train step of the MNIST CNN, ready to call."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from bench.init import initial_weights
    from bench.tasks import get_task

    torch.set_num_threads(1)
    from backends.torch_layers import build_module, to_torch_layout

    task = get_task("mnist_cnn")
    model = build_module(task)
    state = to_torch_layout(task, initial_weights(task.layers, task.input_shape, 0))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(torch.from_numpy(state[name]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((64, 1, 28, 28), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 64))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def neighbour():
    os.sched_setaffinity(0, {1})
    step = loop_steps()
    while True:
        step()


def measure(blocks: int, seed: int) -> list[dict]:
    os.sched_setaffinity(0, {0})
    other = subprocess.Popen([sys.executable, __file__, "--neighbour"])
    time.sleep(8)  # its imports and first steps
    other.send_signal(signal.SIGSTOP)
    step = loop_steps()
    rng = random.Random(seed)
    windows = []

    def window(side: str, block: int) -> None:
        other.send_signal(signal.SIGCONT if side == "B" else signal.SIGSTOP)
        time.sleep(SETTLE)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(WINDOW):
            step()
        wall = time.perf_counter() - start
        windows.append(
            {"block": block, "side": side, "ms_per_step": 1e3 * wall / WINDOW,
             "cpu_per_wall": (time.process_time() - cpu) / wall}
        )  # fmt: skip

    for _ in range(WARMUP):
        window("A", -1)
    for block in range(blocks):
        for side in rng.choice(["ABBA", "BAAB"]):
            window(side, block)
    other.send_signal(signal.SIGCONT)
    other.kill()
    other.wait()
    return windows


def cpu_model() -> str:
    line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in x)
    return line.split(":", 1)[1].strip()


def main(processes: int, blocks: int, out: str) -> None:
    import numpy as np
    from scipy import stats

    runs = []
    for process in range(processes):
        result = subprocess.run(
            [sys.executable, __file__, "--measure", str(blocks), str(process)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        windows = json.loads(result.stdout.strip().splitlines()[-1])
        ratios = []
        for block in range(blocks):
            side = {s: [w["ms_per_step"] for w in windows if w["block"] == block and w["side"] == s]
                    for s in "AB"}  # fmt: skip
            ratios.append(float(np.median(side["B"]) / np.median(side["A"])))
        idle = [w["ms_per_step"] for w in windows if w["side"] == "A" and w["block"] >= 0]
        busy = [w["ms_per_step"] for w in windows if w["side"] == "B"]
        run = {"process": process, "block_ratios": ratios, "ratio": float(np.median(ratios)),
               "idle_ms": float(np.median(idle)), "busy_ms": float(np.median(busy)),
               "windows": windows}  # fmt: skip
        print(json.dumps({k: v for k, v in run.items() if k != "windows"}), flush=True)
        runs.append(run)
    topology = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list")
    siblings = topology.read_text().strip() if topology.exists() else None  # SMT siblings of CPU 0
    logs = np.log([run["ratio"] for run in runs])
    mean, sem = logs.mean(), stats.sem(logs)
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=mean, scale=sem)
    summary = {"busy/idle": float(np.exp(mean)), "low": float(np.exp(low)),
               "high": float(np.exp(high)), "processes": processes, "blocks": blocks,
               "window_steps": WINDOW, "cpu": cpu_model(),
               "cpu0_siblings": siblings}  # fmt: skip
    print(json.dumps(summary))
    Path(out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "--neighbour":
        neighbour()
    elif sys.argv[1] == "--measure":
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
