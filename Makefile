# luod — `make test` runs everything: lint, types, unit, contract (sim), VM tier (real kernel).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run sim test lint typecheck unit vm chaos bench fuzz kernel host-tools clean man

# The main job: a real LUO kernel under QEMU, luod + three VMMs, an update watched live,
# the kexec, and every VM's memory checked after it (5-8 minutes under TCG once the kernel exists).
run: $(STAMP) host-tools
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m tests.vm.showcase

# luod on the simulator, to explore the VMM socket and the REST API without a VM.
sim: $(STAMP)
	@echo "luod on the simulator in .sim/ -- in another shell:"
	@echo "  $(VENV)/bin/luoctl --socket .sim/run/api.sock status"
	$(VENV)/bin/luod --simulate .sim

test: lint typecheck host-tools
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m pytest tests

host-tools:
	tests/vm/ensure-host-tools

$(STAMP): pyproject.toml luod/__init__.py  # the version lives in luod/__init__.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check luod tests bench
	$(VENV)/bin/ruff format --check luod tests bench
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/vulture

man: $(STAMP)  # luoctl's man pages, from its parser (tests/unit/test_manpages.py checks them)
	$(PY) man/generate.py man

typecheck: $(STAMP)
	$(VENV)/bin/mypy luod bench tests

unit: $(STAMP)
	$(PY) -m pytest tests -m "not vm"

vm: $(STAMP)
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m pytest tests/vm

# The whole chaos matrix (kill -9 luod at every phase of an update, the keeper, the systemd
# guest); `make test` runs a representative part of it (tests/vm/test_chaos.py).
chaos: $(STAMP) host-tools
	LUOD_CHAOS=full LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m pytest tests/vm/test_chaos.py

bench: $(STAMP)
	LUOD_TEST_KERNEL="$$(tests/vm/get-kernel)" $(PY) -m bench

# Every fuzz target at 10^5 inputs (the codec and dispatcher in process under atheris, a running
# luod's VMM socket, its REST API by schemathesis), with the figures; `make test` runs 10^3 each.
FUZZ_INPUTS ?= 100000
fuzz: $(STAMP)
	$(PY) -m tests.fuzz --inputs $(FUZZ_INPUTS)

kernel:
	tests/vm/get-kernel

# The .deb (debhelper + pybuild in a Debian sid build root made by mmdebstrap; needs root),
# reused while the sources are unchanged. The last line of output is the .deb's path.
.PHONY: deb
deb:
	@packaging/build-deb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
