"""Test-run order: the longest test files first.

`make test` runs the files on TEST_JOBS pytest-xdist workers (--dist loadfile: a file's tests
share their probe processes, so a file is the unit), which hand out files in collection order.
A long file handed out last keeps one worker busy while the other idles; longest first
(the longest-processing-time rule) keeps both busy to the end. The order below is from
`pytest --durations` on the CI machine class (2 cores, 2026-12-01); files not named keep
their own order after these. Order only: which tests run, and what they check, is unchanged.
"""

from __future__ import annotations

# roughly how long each file took on one worker of CI's pool (default and slow tests together),
# longest first
LONGEST_FIRST = (
    "test_backend_contract.py",  # ~260 s: one contract probe process per backend, every task
    "test_parity.py",  # ~200 s: one parity probe per backend, every task
    "test_keras_windows.py",  # ~100 s: one probe per Keras backend, every mode
    "test_faults.py",  # ~140 s with slow: the thirty-cell drill
    "test_transformer_smoke.py",  # ~110 s (slow): both transformers on every backend
    "test_cli.py",  # ~130 s with slow: ResNet-18 through bench run on every backend
    "test_staging.py",
    "test_padding_mask.py",
    "test_keras_backend.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    # sorted() is stable: within a file, and among the files not named, the order is pytest's
    items[:] = sorted(items, key=lambda item: rank.get(item.path.name, len(rank)))
