# accessfabric — every target does its own set-up on a fresh Debian machine (run as root).
SHELL := /bin/bash
# Debian's /usr/bin/python3 is built with PGO+LTO and runs our pure-Python hot
# paths about twice as fast as a plain source build (see docs/adr/0002).
PYTHON ?= $(shell test -x /usr/bin/python3 && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
HASH := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-test-$(HASH)
# The demo needs only the runtime dependencies, not the test toolchain (docs/benchmarks.md).
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
DEBIAN_PACKAGES := iproute2 nftables iputils-ping procps python3-venv nginx-light openssh-server openssh-client iperf3 curl golang-go golang-github-flynn-noise-dev golang-golang-x-crypto-dev chromium etcd-server etcd-client systemd dbus-daemon
APT := DEBIAN_FRONTEND=noninteractive apt-get -y -o DPkg::Lock::Timeout=120

.PHONY: demo test unit-coverage coverage lint fuzz bench debian-deps clean

$(PY):
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		apt-get update -o DPkg::Lock::Timeout=120 && $(APT) install python3-venv; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-run-* && touch $(RUN_STAMP)

# Packages such as nginx-light and etcd-server would start a system service listening on all interfaces;
# the tests run their own instances on loopback, so a temporary policy-rc.d forbids that.
debian-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root to install)"; \
		else \
			policy=/usr/sbin/policy-rc.d; made_policy=""; \
			if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; made_policy=1; fi; \
			apt-get update -o DPkg::Lock::Timeout=120 && $(APT) install $$missing; status=$$?; \
			[ -n "$$made_policy" ] && rm -f $$policy; exit $$status; fi; fi

demo: $(RUN_STAMP)
	$(VENV)/bin/accessfabric demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

# The sans-IO core's unit tests run once, under coverage, against the floors in
# tests/coverage_floors.py (they only go up); then the rest of the suite, untraced.
test: debian-deps $(STAMP) lint unit-coverage
	$(PY) -bb -m pytest -q $$($(PY) tests/coverage_floors.py --rest-args)

unit-coverage: $(STAMP)
	rm -f .coverage
	$(PY) -bb -m pytest -q $$($(PY) tests/coverage_floors.py --unit-args)
	$(PY) tests/coverage_floors.py

# The whole suite under coverage: a report, no floor, not part of `make test` (tracing
# doubles the CPU time; in-process code only, not the node processes tests start).
coverage: debian-deps $(STAMP)
	rm -f .coverage
	$(PY) -bb -m pytest -q --cov=accessfabric --cov-report=term-missing:skip-covered

fuzz: $(STAMP)
	$(PY) -m accessfabric.tools.fuzz --inputs $${FUZZ_INPUTS:-1000000}

bench: $(STAMP)
	$(VENV)/bin/accessfabric bench codec --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
