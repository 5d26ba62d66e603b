# `make run`: the embedded default (127.0.0.1:5060 UDP+TCP, in-memory state).
# `make test`: the whole suite; installs what it needs on a fresh Debian machine.
# The distribution's interpreter when it is 3.11 or later: Debian builds it with PGO and LTO (as
# python:3.11-slim is), and it runs edgeproxy ~10-15 % cheaper per message than a pyenv build made
# without --enable-optimizations that may come first on PATH. Else whatever python3 is.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo /usr/bin/python3 || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: run test test-interop bench system-deps clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { $(APT) update -q && $(APT) install -y -q python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-deps

$(VENV)/.interop-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,interop]'
	touch $@ $(VENV)/.test-deps $(VENV)/.run-deps

# redis-server for the state-store tests, sipp (package sip-tester) for interop,
# ip (iproute2) for the failover lab's network namespaces.
system-deps:
	@command -v redis-server >/dev/null && command -v sipp >/dev/null && command -v ip >/dev/null || { \
		$(APT) update -q && $(APT) install -y -q redis-server sip-tester iproute2; }

run: $(VENV)/.run-deps
	$(BIN)/edgeproxy run $(if $(CONFIG),--config $(CONFIG))

test: system-deps $(VENV)/.test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/clients

# Real clients nobody here wrote: baresip, and JsSIP in headless Chromium (two browsers,
# and the failover demo). A client whose package cannot be installed is named here,
# and its tests skip saying why (-rs lists them); -rP shows the failover timeline.
INTEROP := baresip:baresip-core chromium:chromium chromedriver:chromium-driver npm:npm
test-interop: system-deps $(VENV)/.interop-deps
	@for pair in $(INTEROP); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null || $(APT) install -y -q $$pkg >/dev/null 2>&1 || \
		{ $(APT) update -q >/dev/null 2>&1 && $(APT) install -y -q $$pkg >/dev/null 2>&1; } || \
		echo "test-interop: Debian package $$pkg could not be installed: the tests needing $$cmd will SKIP"; \
	done
	$(BIN)/python -m pytest -q -p no:cacheprovider -rsP tests/clients

# Not part of `make test`: the parser, call-path and REGISTER-path micro-benchmarks, then one table of calls,
# REGISTER, subscriptions and NOTIFY fan-out against Kamailio in the same run (Debian's kamailio installed
# when missing), saved under benchmarks/results/table-*.txt.
bench: system-deps $(VENV)/.run-deps
	@command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || { $(APT) update -q && $(APT) install -y -q kamailio; }
	@[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so ] || $(APT) install -y -q kamailio-presence-modules
	$(BIN)/python benchmarks/parser_bench.py
	$(BIN)/python benchmarks/call_path_bench.py
	$(BIN)/python benchmarks/register_path_bench.py
	$(BIN)/python benchmarks/bench_table.py

clean:
	rm -rf $(VENV) build *.egg-info
