"""`bench compare`: two or more arms measured on one machine, interleaved in time.

    bench compare --tasks mnist_cnn --arms backend=torch backend=jax
    bench compare --tasks mnist_cnn --backends torch --arms rev=HEAD~1 .
    bench gate --ab REV            this checkout against revision REV (bench/gate/ab.py)

On a shared machine a run's step time drifts by 20% and more between runs minutes apart, so two
numbers measured at different times cannot tell a 5% difference. Here every arm is a live
serving worker (bench/serve.py) and the coordinator alternates short windows between them
(bench/compare/schedule.py), restarting the workers for every round, and judges the paired
ratios with the process pair as the unit (bench/compare/analysis.py). Output: a table, markdown
(--summary and $GITHUB_STEP_SUMMARY), one JSON line, and a directory (--out) with every window
(windows.csv), each row's result (compare.csv, which `bench report` shows beside its tables),
the arms' ready messages (arms.csv) and each worker's log.
"""

from bench.compare.command import add_parser, run_comparison

__all__ = ["add_parser", "run_comparison"]
