# Two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch keeps installs small; set TORCH_SPEC=torch for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test e2e install install-dev bench lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/recforge quickstart

# Two pytest workers (pytest-xdist) fit the 2-core machine the suite is sized for;
# `make test TEST_WORKERS=0` runs it in one process, `TEST_WORKERS=auto` one per core.
TEST_WORKERS ?= 2

test: install-dev
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The web page in headless Chromium (Playwright); skipped without /usr/bin/chromium
# (or RECFORGE_CHROMIUM). Also part of `make test`.
e2e: install-dev
	$(PY) -m pytest -q -m e2e

bench: install-dev
	$(PY) benchmarks/bench_models.py --dataset ml-1m-implicit --models all --markdown docs/benchmarks.md
	$(PY) benchmarks/bench_models.py --dataset ml-100k --models mf --markdown docs/benchmarks.md
	$(PY) benchmarks/bench_content.py

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks

# The documentation site (docs/*.md and the API reference generated from the docstrings) into
# site/; --strict fails on a broken link or cross-reference (tests/test_docs.py runs the same).
docs: install-dev
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site build dist src/*.egg-info .pytest_cache .hypothesis
