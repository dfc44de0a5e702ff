# The two commands: `make test` and `make demo`. Each creates .venv and installs the
# project into it when it is missing or stale (keyed on requirements.txt + pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
KEY    := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.installed-$(KEY)
PYTEST_ARGS ?=
# pytest processes (pytest-xdist; 0 runs in this one): each test file runs whole on one of them, the longest first
# (tests/conftest.py orders them and hands out files). 3 on 2 cores: the end-to-end tests spend part of their time
# waiting (servers and Ray starting, a tracking-server outage), which a third process fills: the cores then stay 98 %
# busy: 12 min 38 s for 497 tests vs 13 min 35 s (92 % busy) on 2 processes (2026-12-06, 2-core EPYC; the suite's
# current time: README, "Install and the two commands")
TEST_WORKERS ?= 3
XDIST  = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: test test-fast lint demo install clean-venv

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# the developer's lane: everything but the tests marked slow (end-to-end runs, trained fixtures, soak); CI runs `test`
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# ruff's linter and formatter (pyproject.toml [tool.ruff]); `ruff format` and `ruff check --fix` repair most of it
LINTED = omg omg_platform tests benchmarks tools
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

demo: $(STAMP)
	$(BIN)/omg demo

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "[make] installing into $(VENV) (requirements key $(KEY)) ..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "[make] $(VENV) is ready"

clean-venv:
	rm -rf $(VENV)
