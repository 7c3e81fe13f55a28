# make run IFACE=eth0   attach to IFACE (default: the default-route interface), foreground
# make test             lint, types, unit and privileged tests
# make bench            benchmarks (figures only, never pass/fail)
# make vm-test KERNEL=6.1   make test in a VM booting Debian's 6.1 kernel (or 6.12, or a
#                       linux-image-* package); VM_TESTS='pytest args' runs those tests instead
# make install-systemd  ncebpf@NAME.service running a copy of ncebpf in $(PREFIX)
# Each installs what is missing: Debian packages, the venv, the package itself. `run` gets
# only what ncebpf needs; `test` and `bench` add the test-only packages and dev tools.

IFACE ?= $(shell ip -o route show default 2>/dev/null | awk '{print $$5; exit}')
VENV := .venv
PY := $(VENV)/bin/python
# Stamps: each step runs again only when its inputs change.
SYSTEM_DEPS := $(VENV)/.system-deps
TEST_DEPS := $(VENV)/.system-deps-test
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
# make install-systemd: a venv of its own, not this checkout's.
PREFIX ?= /opt/ncebpf
UNITDIR ?= /etc/systemd/system

.PHONY: run test lint typecheck unit bench vm-test install install-dev install-systemd clean

# What running ncebpf needs: run-time Debian packages, the venv, ncebpf without dev tools.
install: $(INSTALLED)
# What the tests and benchmarks need on top: test-only packages (tcpdump, perl, gcc, nsd, ...)
# and the dev extras (pytest, mypy, ruff, hypothesis).
install-dev: $(INSTALLED_DEV)

$(SYSTEM_DEPS): scripts/install-system-deps
	scripts/install-system-deps
	@mkdir -p $(VENV) && touch $@

$(TEST_DEPS): scripts/install-system-deps
	scripts/install-system-deps --test
	@mkdir -p $(VENV) && touch $@

# The venv comes from Debian's interpreter with system site-packages: that is
# where python3-bpfcc puts BCC's Python module.
$(INSTALLED): $(SYSTEM_DEPS) pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e .
	touch $@

$(INSTALLED_DEV): $(INSTALLED) $(TEST_DEPS) pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

run: install
	@test -n "$(IFACE)" || { echo "no default route: give IFACE=..."; exit 2; }
	$(VENV)/bin/ncebpf attach --iface $(IFACE)

lint: install-dev
	$(VENV)/bin/ruff check ncebpf tests bench

typecheck: install-dev
	$(VENV)/bin/mypy

unit: install-dev
	$(VENV)/bin/pytest -m 'not privileged'

test: lint typecheck
	$(VENV)/bin/pytest

# scripts/vm-test installs what it needs (QEMU, virtme-ng in its own venv under
# ~/.cache/vm-test, the kernel package), copies this checkout with a .venv of its own,
# and exits with the guest's status. CI and PYTEST_ADDOPTS reach the guest.
KERNEL ?= 6.1
export VM_TESTS
vm-test:
	scripts/vm-test $(KERNEL)

bench: install-dev
	$(PY) bench/run.py
	$(PY) bench/capture_cpu.py
	$(PY) bench/hooks_cpu.py
	$(PY) bench/peers_cpu.py
	$(PY) bench/dump_bench.py
	$(PY) bench/loop_stall_bench.py
	$(PY) bench/report_bench.py
	$(PY) bench/report_html_bench.py --browser
	$(PY) bench/history_bench.py
	$(PY) bench/top_bench.py

# ncebpf@NAME.service runs $(PREFIX)/bin/ncebpf: its own venv (Debian's python3 with system
# site-packages, for BCC) holding a plain, non-editable install of this source tree, so the
# service does not depend on this checkout staying where it is. Configure /etc/ncebpf/NAME.toml.
install-systemd: $(SYSTEM_DEPS)
	test -x $(PREFIX)/bin/python || /usr/bin/python3 -m venv --system-site-packages $(PREFIX)
	$(PREFIX)/bin/python -m pip install -q --disable-pip-version-check .
	sed 's|@NCEBPF@|$(PREFIX)/bin/ncebpf|' packaging/systemd/ncebpf@.service \
		> $(UNITDIR)/ncebpf@.service
	systemctl daemon-reload 2>/dev/null || true

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
