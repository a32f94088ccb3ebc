"""The gate's allowances per device class and the thresholds of its state matching."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    max_slowdown: float  # allowed step-time ratio is 1 + this (machine states matched)
    accuracy_drop: float  # absolute test accuracy below the baseline's that still passes
    unmatched_slowdown: float  # the allowance where the machine's states could not be matched
    suite_slowdown: float  # allowed growth of the geometric mean step-time ratio of all rows
    other_model_slowdown: float  # the allowance for calibration-normalized times (other models)


# Defaults per device class, from the measurements in results/baselines/README.md (2-core shared
# CI VM, quick suite, 10 fresh runs of unchanged code and 3 with an injected 15% slowdown). A
# shared VM runs in fast and slow phases (the same numpy loop 1.8x slower for seconds to minutes,
# with nothing else on the VM), and whole runs can be slower still: unchanged rows came out up to
# x1.48 of the baseline (interval lower bound 1.42) even in windows the probe called fast, and
# one run's suite mean at x1.22 (lower bound 1.13), above two of the three 15%-slower runs (lower
# bounds 1.12, 1.14, 1.15). So on a CPU the defaults are set not to cry wolf: x1.5 per row, x1.2
# for the suite; they catch gross regressions only, and a 15% one is not told apart from this
# machine class's drift (measured). On a quiet, dedicated machine pass tighter ones (e.g.
# --max-slowdown 0.1 --suite-slowdown 0.08). Fast-state matching stays: where each side has
# enough such windows it narrows the interval (state-matched rows of unchanged code mostly agreed
# to x0.89-x1.08). cuda: a dedicated device does not have those phases: 5% (not yet measured on
# a GPU). Across CPU models (calibration-normalized times): x2, gross regressions only, because a
# numpy calibration cannot see how differently each framework uses two models (XLA's code for
# AVX-512 or AVX2, oneDNN's kernels). Accuracy: the quick suite on a CPU is deterministic per
# backend to 1e-4; 0.01 leaves room for nondeterministic GPU kernels.
DEFAULT_TOLERANCES = {
    "cpu": Tolerances(
        0.5, 0.01, unmatched_slowdown=0.5, suite_slowdown=0.2, other_model_slowdown=1.0
    ),
    "cuda": Tolerances(
        0.05, 0.01, unmatched_slowdown=0.05, suite_slowdown=0.05, other_model_slowdown=1.0
    ),
}
# The suite verdict: the rows' step-time ratios drift apart more than together (measured: in one
# run of unchanged code, rows at x0.79 and x1.08), so their geometric mean, with a Student-t
# interval across the rows, moves far less than any row: it catches a slowdown of every train
# step that single rows cannot tell from drift. It needs SUITE_MIN_ROWS rows with a ratio.
SUITE_MIN_ROWS = 5
FAST_STATE = 1.25  # a window ran in the fast state when its probe took at most this x the fastest
MIN_STATE_WINDOWS = 6  # fast-state windows each side needs for a state-matched comparison
CONFIDENCE = 0.95
