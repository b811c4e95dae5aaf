# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

# pip prints every package it fetches and installs: a fresh machine spends
# most of `make demo`'s first run here (measured figures: README.md).
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) with $(PYTHON), then installing DCiS with its test, lint, bench and plot extras"
	@echo "==> (about 2 minutes on a fresh machine, a few seconds once pip's cache is warm; pip shows each package)"
	@start=$$(date +%s); \
	( test -x $(PY) || $(PYTHON) -m venv $(VENV) ) && \
	$(PY) -m pip install --progress-bar on --upgrade pip && \
	$(PY) -m pip install --progress-bar on -e '.[test,lint,bench,plot]' && \
	echo "==> $(VENV) ready in $$(( $$(date +%s) - start )) s"
	@touch $(STAMP)

demo: $(STAMP)
	@echo "==> running the demo: two testbeds of six dtn-node daemons on loopback, about 2 minutes (python -m dcis.tools.demo)"
	@start=$$(date +%s); $(PY) -m dcis.tools.demo; rc=$$?; \
	echo "==> demo finished in $$(( $$(date +%s) - start )) s (exit status $$rc)"; exit $$rc

# pytest's exit code 5 means "no tests ran": that is a failure, not a pass.
# The suite runs on TEST_WORKERS pytest-xdist worker processes (TEST_WORKERS=0:
# in this process, one test at a time). --dist loadgroup keeps the tests that
# share an xdist_group on one worker. Many tests wait on daemons, sockets and
# subprocesses, so more workers than cores pays: measured on 2 cores, see the
# commit that set the number.
# Bytecode goes to $(VENV)/pycache even where PYTHONDONTWRITEBYTECODE is set
# (it is on the shared machine): the suite starts hundreds of daemons and CLI
# processes, and each one otherwise compiles every dcis module again (and each
# worker every test module's assertion rewrite); nothing is written into the
# source tree.
TEST_WORKERS ?= 4
test: $(STAMP)
	@env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(CURDIR)/$(VENV)/pycache \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	PYTHONPATH=.typing $(VENV)/bin/lint-imports

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .hypothesis .mypy_cache .ruff_cache
