# Two commands from a fresh clone: `make demo` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
SESSIONCTL := SESSIONCTL_CONFIG=$(CURDIR)/$(DEMO)/sessionctl.toml $(BIN)/sessionctl

.PHONY: venv demo test bench bench-quick lint format completions man clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# A demo store of each kind whose sessions are active, expired and invalid relative to now.
demo: venv
	$(BIN)/python tools/storegen.py demo $(DEMO)
	@echo; echo '$$ sessionctl stats --store web'
	$(SESSIONCTL) stats --store web
	@echo; echo '$$ sessionctl list --store web --limit 8'
	$(SESSIONCTL) list --store web --limit 8
	@echo; echo '$$ sessionctl validate --store browsers   (exit status 1: invalid sessions found)'
	-$(SESSIONCTL) validate --store browsers
	@echo; echo '$$ sessionctl cleanup --store bash --expired --invalid --dry-run'
	$(SESSIONCTL) cleanup --store bash --expired --invalid --dry-run
	@echo; echo "Try it yourself:  export SESSIONCTL_CONFIG=$(CURDIR)/$(DEMO)/sessionctl.toml; $(BIN)/sessionctl --help"

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python bench/run.py

# The 100k cases (the folder store at 10k) and start-up, printed, not written to
# bench/RESULTS.md (under 3 minutes).
bench-quick: venv
	$(BIN)/python bench/run.py --quick

lint: venv
	$(BIN)/ruff check src tests tools bench
	$(BIN)/ruff format --check src tests tools bench

format: venv
	$(BIN)/ruff format src tests tools bench
	$(BIN)/ruff check --fix src tests tools bench

# Generated from the Typer app; regenerate and commit whenever a command, option or help changes
# (tests/test_docs.py fails when the committed files drift from the code).
completions: venv
	$(BIN)/python tools/gendocs.py completions

man: venv
	$(BIN)/python tools/gendocs.py man

clean:
	rm -rf $(VENV) $(DEMO) build dist src/*.egg-info .pytest_cache
