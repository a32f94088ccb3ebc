# make bench   run a benchmark matrix (variables below); results land in results/<run-id>/
# make test    the test suite (fast default run); test-slow / test-gpu run the marked tests
# make report  comparison tables, plots and report.html from run directories (RUNS=...)
# make lint    ruff check + ruff format --check
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
RUNS ?= results
REPORT_ARGS ?=

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

.PHONY: venv bench test test-slow test-gpu lint format clean report

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

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: venv
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-gpu: venv
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
