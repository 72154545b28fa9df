# Every target works on a fresh machine: the venv is created and the package
# installed (editable, with the test extra) when missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs pytest clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tfmot_ext.demo

lint: $(STAMP)
	$(PY) -m ruff check tfmot_ext tests benchmarks docs notebooks
	$(PY) -m mypy

docs: $(STAMP)
	$(PY) -m mkdocs build --strict

pytest: $(STAMP)
	$(PY) -m pytest --durations=25

test: lint docs pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
