# The two set-up commands of the README: `make demo` and `make test`. Both build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

test: $(STAMP)
	bash scripts/test.sh

lint: $(STAMP)
	$(BIN)/ruff check .

# Benchmarks print ratios measured side by side in one run; see docs/ for the tables.
bench: $(STAMP)
	$(BIN)/python bench/runtime.py --quick
	$(BIN)/python bench/prefix_cache.py --lengths 8192
