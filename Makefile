# luod — `make test` runs everything: lint, types, unit, contract (sim), VM tier (real kernel).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck unit vm bench kernel clean

test: lint typecheck
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m pytest tests

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check luod tests bench
	$(VENV)/bin/ruff format --check luod tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy luod

unit: $(STAMP)
	$(PY) -m pytest tests -m "not vm"

vm: $(STAMP)
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m pytest tests/vm

bench: $(STAMP)
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m bench

kernel:
	tests/vm/get-kernel

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
