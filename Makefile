# make bench   run a benchmark matrix (variables below); results land in results/<run-id>/
# make test    the test suite (fast default run), TEST_JOBS (default 2) test files at a time;
#              test-slow / test-heavy / test-gpu run the marked tests
# make report  comparison tables, plots and report.html from run directories (RUNS=...)
# make lint    ruff check + ruff format --check
# make gate    regression gate: a run (CURRENT, default the newest under results/) against a
#              baseline (BASELINE, default the committed CPU quick-suite one); exit 1 on regression
# make gate-ab  step time: this checkout against git revision BASE (default: the one named in
#              results/baselines/ab-base), interleaved on this machine; accuracy and status:
#              CURRENT against BASELINE as make gate judges them
# make compare ARMS="backend=torch backend=jax" TASKS=mnist_cnn   arms interleaved (bench compare)
# make baseline RUN=results/<run-id>   write BASELINE from a run (refresh a baseline)
# make bench-pytest  pytest-benchmark step-time benchmarks, each backend in its own process
# make gpu-check  the GPU check (one device session, < 8 min): source .gpu/setup.sh && make gpu-check NOVENV=1 PYTHON=python3
# Every target builds or refreshes the local venv first when pyproject.toml changed.

PYTHON ?= python3
VENV ?= .venv
DEVICE ?= cpu
SUITE ?= full
TASKS ?=
BACKENDS ?=
PRECISION ?= fp32
MODE ?= default
EPOCHS ?=
DATA ?=
ARGS ?=
PYTEST_ARGS ?=
TEST_JOBS ?= 2
RUNS ?= results
REPORT_ARGS ?=
BASELINE ?= results/baselines/cpu-quick.csv
CURRENT ?= results
GATE_ARGS ?=
RUN ?=
BENCH_PYTEST_DIR ?= .benchmarks/pytest
BENCH_PYTEST_BACKENDS ?= torch jax keras-tensorflow keras-jax keras-torch
DEVICE_CHECK ?= cuda
GPU_CHECK_ARGS ?=

# The stamp is keyed on the dependency list: a new pyproject.toml rebuilds the venv from scratch.
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
# NOVENV=1 uses $(PYTHON) as it is, with no venv: for a machine without network that already has
# the frameworks (the lent GPU machine: `source .gpu/setup.sh && make test-gpu NOVENV=1`).
NOVENV ?=
ifeq ($(NOVENV),1)
PY := $(PYTHON)
STAMP :=
else
PY := $(VENV)/bin/python
endif

.PHONY: venv bench test test-slow test-heavy test-gate-proof test-gpu lint format clean report overhead gate gate-ab gate-ab-proof compare baseline bench-pytest

venv: $(STAMP)

$(VENV)/.stamp-%: pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[all,dev]'
	touch $@

bench: venv
	$(PY) -m bench run --suite $(SUITE) --device $(DEVICE) --precision $(PRECISION) --mode $(MODE) \
		$(if $(TASKS),--tasks $(TASKS)) $(if $(BACKENDS),--backends $(BACKENDS)) \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(DATA),--data $(DATA)) $(ARGS)

# make report  tables, plots and report.html (RUNS=dirs; default: every run under results/)
report: venv
	$(PY) -m bench report $(RUNS) $(REPORT_ARGS)

# make gate  CURRENT: run directories, a folder of them (its newest) or pytest-benchmark JSON
gate: venv
	$(PY) -m bench gate --baseline $(BASELINE) --current $(CURRENT) $(GATE_ARGS)

# The A/B base: the first word of results/baselines/ab-base's first non-comment line.
BASE ?= $(shell sed -n '/^[0-9a-f]/{s/[^0-9a-f].*//;p;q}' results/baselines/ab-base 2>/dev/null)
ARMS ?=
COMPARE_ARGS ?=

gate-ab: venv
	@test -n "$(BASE)" || { echo "usage: make gate-ab BASE=<git revision>" >&2; exit 2; }
	$(PY) -m bench gate --ab $(BASE) --baseline $(BASELINE) --current $(CURRENT) $(GATE_ARGS)

# make gate-ab-proof  the A/B gate's proof (tests/ab_proof.py): RUNS gate runs each of unchanged
#                     code, +15% and +5% injected (about 4-5 min per gate run)
gate-ab-proof: venv
	$(PY) tests/ab_proof.py --runs $(or $(PROOF_RUNS),10) $(if $(PROOF_KINDS),--kinds $(PROOF_KINDS))

compare: venv
	@test -n "$(ARMS)" -a -n "$(TASKS)" || { echo 'usage: make compare TASKS=mnist_cnn ARMS="backend=torch backend=jax" [BACKENDS=...]' >&2; exit 2; }
	$(PY) -m bench compare --tasks $(TASKS) $(if $(BACKENDS),--backends $(BACKENDS)) --arms $(ARMS) $(COMPARE_ARGS)

baseline: venv
	@test -n "$(RUN)" || { echo "usage: make baseline RUN=results/<run-id> [BASELINE=$(BASELINE)]" >&2; exit 2; }
	$(PY) -m bench baseline $(RUN) --out $(BASELINE)

# One process per backend (Keras fixes its backend per process); JSON per backend, with the raw
# round times (--benchmark-save-data) that `bench gate` needs; then pytest-benchmark's own table.
# glibc reads the malloc thresholds at process start, so they are set here, as the runner does
# for its workers (bench.cell.worker_environment).
bench-pytest: venv
	mkdir -p $(BENCH_PYTEST_DIR)
	for backend in $(BENCH_PYTEST_BACKENDS); do \
		MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864 \
		BENCH_PYTEST_BACKEND=$$backend $(PY) -m pytest tests/benchmarks -m benchmarks \
			--benchmark-save-data --benchmark-json=$(BENCH_PYTEST_DIR)/$$backend.json \
			$(PYTEST_ARGS) || exit 1; \
	done
	$(PY) -m pytest_benchmark compare $(BENCH_PYTEST_DIR)/*.json

# pytest-xdist runs TEST_JOBS test files at a time (a file's tests share their probe processes,
# so a file is the unit: --dist loadfile); without xdist (the GPU machine), one at a time.
XDIST = $$($(PY) -c 'import xdist' 2>/dev/null && [ "$(TEST_JOBS)" -gt 1 ] && echo "-n $(TEST_JOBS) --dist loadfile")

test: venv
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-slow: venv
	$(PY) -m pytest $(XDIST) -m slow $(PYTEST_ARGS)

# Every mode of every backend on the transformer tasks and the tiny ResNet, and ResNet-18's
# parity with torch: not in CI (run it before a release, and after a change to a backend).
test-heavy: venv
	$(PY) -m pytest $(XDIST) -m heavy $(PYTEST_ARGS)

# The gate's proof (tests/test_gate_proof.py): five fresh quick-suite runs pass the gate, an
# injected 15% slowdown and an injected accuracy drop fail it; 25-30 minutes on 2 CPU cores.
test-gate-proof: venv
	$(PY) -m pytest -m gate_proof $(PYTEST_ARGS)

test-gpu: venv
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

# make gpu-check  tests/gpu_check.py into results/gpu/<date>-<device>/ (docs/GPU_CHECK.md);
# DEVICE_CHECK=cpu runs what needs no GPU; GPU_CHECK_ARGS e.g. "--backends torch --copy-to $$OUT"
.PHONY: gpu-check
gpu-check: venv
	$(PY) tests/gpu_check.py --device $(DEVICE_CHECK) --out results/gpu $(GPU_CHECK_ARGS)

# make overhead   the harness's step time against bare hand-written loops, interleaved in ABBA/BAAB
#                 blocks (tests/overhead.py); BACKENDS=, TASKS=, MODES= (or MODE=), BLOCKS=, and
#                 OVERHEAD_ARGS (e.g. --quick, --out DIR) pass through
overhead: venv
	$(PY) tests/overhead.py --device $(DEVICE) $(if $(BACKENDS),--backends $(BACKENDS)) \
		$(if $(TASKS),--tasks $(TASKS)) $(if $(BLOCKS),--blocks $(BLOCKS)) \
		$(if $(MODES),--modes $(MODES),$(if $(filter-out default,$(MODE)),--modes $(MODE))) \
		$(OVERHEAD_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
