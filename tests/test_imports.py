"""`bench` knows no framework: importing any of its modules imports no torch, jax, tf or keras."""

import subprocess
import sys

CODE = """
import sys
import bench, bench.cli, bench.config, bench.data, bench.init, bench.layers, bench.metrics
import bench.results, bench.runner, bench.tasks, bench.worker, backends
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               ('torch', 'jax', 'jaxlib', 'flax', 'optax', 'tensorflow', 'keras'))
print(','.join(heavy))
"""


def test_bench_imports_no_framework():
    result = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
