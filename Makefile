# fedbeat: one-command install, tests and the default simulation.
# TFF 0.87.0 pins jax==0.4.14, which no registry serves, so the install is two steps:
# the pinned lock (jax/jaxlib 0.4.13) with --no-deps, then TFF itself with --no-deps.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedbeat-installed
TFF_VERSION := 0.87.0
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the integration tests mostly wait on their subprocesses, so two
# share 2 cores well; a module's tests stay in one process (--dist loadfile). 0 runs in this one.
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: setup test test-fast bench device-selftest device-aarch64 simulate lock clean

setup: $(STAMP)

$(STAMP): requirements/lock.txt setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "fedbeat needs Python 3.11 (TFF 0.87 supports 3.9-3.11): '$(PYTHON)' not found; install it or run 'make setup PYTHON=/path/to/python3.11'"; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || { echo "fedbeat needs Python 3.11 (tomllib needs 3.11, TFF 0.87 stops at 3.11), but '$(PYTHON)' is $$($(PYTHON) -V 2>&1); run 'make setup PYTHON=/path/to/python3.11'"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps tensorflow-federated==$(TFF_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -c 'import tensorflow_federated, tflite_runtime.interpreter, wfdb, scipy, numpy; print("fedbeat environment ready:", "numpy", numpy.__version__, "scipy", scipy.__version__)'
	@touch $(STAMP)

# pytest exits 5 when it collected nothing: that is a failure here, not a pass.
test: setup
	@$(PYTEST) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: setup
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# Quick benchmarks whose ratios CI checks (results land in benchmarks/results/).
bench: setup
	$(BIN)/python benchmarks/cache_speedup.py --check
	$(BIN)/python benchmarks/edge.py --check
	$(BIN)/python benchmarks/simulation_speed.py --quick --check
	$(BIN)/python benchmarks/secure_aggregation.py --cohorts 10 50 100 --check --out build/bench

# The device side in a venv holding only numpy, tflite-runtime, grpcio and cryptography, as on a Raspberry Pi:
# the on-device self-test, one personalisation, then one real federated round against `fedbeat serve`
# and one secure-aggregation round of three devices.
DEVICE_VENV := .venv-device
device-selftest: setup
	@test -x $(DEVICE_VENV)/bin/python || $(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps numpy==1.25.2 tflite-runtime==2.14.0 grpcio==1.74.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
	mkdir -p build/device
	$(BIN)/python -c 'from models.beat_classifier import build_beat_classifier; build_beat_classifier().save("build/device/model.keras")'
	$(BIN)/fedbeat export --model build/device/model.keras --out build/device
	$(DEVICE_VENV)/bin/python -m pip list --format=freeze --disable-pip-version-check | grep -v -E '^(pip|setuptools)=='
	$(DEVICE_VENV)/bin/python -m edge_runtime selftest --model build/device/model_train.tflite --json
	$(DEVICE_VENV)/bin/python -m edge_runtime personalize --model build/device --data edge_runtime/sample_beats.npz --out build/device/personal --json
	$(BIN)/python -m simulation.coordinator.smoke --device-python $(DEVICE_VENV)/bin/python

# The same device commands as an aarch64 program (Raspberry Pi OS bookworm, 64-bit) under qemu
# user-mode emulation, compared output by output with x86 (tests/edge_runtime/test_aarch64.py). The five tests
# are independent and emulation is CPU-bound, so they spread over PYTEST_WORKERS processes (--dist load).
AARCH64 := build/aarch64
device-aarch64: setup
	HOST_PYTHON=$(BIN)/python .ci/aarch64_python.sh $(AARCH64)
	FEDBEAT_AARCH64_PYTHON=$(CURDIR)/$(AARCH64)/python $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist load -m aarch64 -rA tests/edge_runtime/test_aarch64.py

simulate: setup
	$(BIN)/fedbeat simulate

# Re-resolve the lock from requirements/base.in in a scratch venv (needs registry access).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements/base.in
	{ sed -n '1,3p' requirements/lock.txt; .lock-venv/bin/pip freeze --all | grep -v '^pip==' | grep -vi '^tensorflow-federated'; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(DEVICE_VENV) .pytest_cache build *.egg-info
