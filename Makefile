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
BIN := $(VENV)/bin

.PHONY: venv bench test test-slow test-gpu lint format clean report

venv: $(STAMP)

$(STAMP): pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $@

bench: venv
	$(BIN)/bench run --suite $(SUITE) --device $(DEVICE) --precision $(PRECISION) --mode $(MODE) \
		$(if $(TASKS),--tasks $(TASKS)) $(if $(BACKENDS),--backends $(BACKENDS)) \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(DATA),--data $(DATA)) $(ARGS)

# make report  tables, plots and report.html (RUNS=dirs; default: every run under results/)
report: venv
	$(BIN)/bench report $(RUNS) $(REPORT_ARGS)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: venv
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-gpu: venv
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
