# Two entry points: `make demo` (train + evaluate on Fashion-MNIST, write runs/demo/report.md)
# and `make test` (lint, type-check, unit tests). Each creates .venv when missing.
# `make reliability` runs the hostile-input catalogue (pytest -m reliability, ~8 min) and rewrites
# docs/reliability.md and .json; run it as root to include the full-disk family (tmpfs mounts).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test lint data browser reliability clean

$(STAMP): requirements-ci.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-ci.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist where apt and root are available;
# otherwise the loader looks in --data-dir / the cache, then downloads when online.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
		|| echo "apt-get could not install dataset-fashion-mnist; the loader will try the cache and the download"; \
	fi

# Debian's chromium opens report.html in tests/reporting/test_browser.py, installed the same way
# (apt, as root, when the binary is missing); without it that test is skipped and says why.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation) >/dev/null 2>&1 \
		|| echo "apt-get could not install chromium; the browser test of report.html will be skipped"; \
	fi

demo: $(STAMP) data
	$(BIN)/bofexits demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

test: $(STAMP) lint browser
	$(BIN)/python -m pytest

reliability: $(STAMP)
	BOFEXITS_RELIABILITY_REPORT=docs/reliability.md $(BIN)/python -m pytest -m reliability tests/reliability

clean:
	rm -rf $(VENV) runs
