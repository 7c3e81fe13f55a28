# make run IFACE=eth0   attach to IFACE (default: the default-route interface), foreground
# make test             lint, types, unit and privileged tests
# make bench            benchmarks (figures only, never pass/fail)
# Both install what is missing: Debian packages, the venv, the package itself.

IFACE ?= $(shell ip -o route show default 2>/dev/null | awk '{print $$5; exit}')
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_DEPS := $(VENV)/.system-deps
INSTALLED := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench install install-systemd clean

install: $(INSTALLED)

$(SYSTEM_DEPS): scripts/install-system-deps
	scripts/install-system-deps
	@mkdir -p $(VENV) && touch $@

# The venv comes from Debian's interpreter with system site-packages: that is
# where python3-bpfcc puts BCC's Python module.
$(INSTALLED): $(SYSTEM_DEPS) pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

run: install
	@test -n "$(IFACE)" || { echo "no default route: give IFACE=..."; exit 2; }
	$(VENV)/bin/ncebpf attach --iface $(IFACE)

lint: install
	$(VENV)/bin/ruff check ncebpf tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -m 'not privileged'

test: lint typecheck
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/run.py
	$(PY) bench/capture_cpu.py

# ncebpf@NAME.service, running this checkout's ncebpf; configure /etc/ncebpf/NAME.toml.
install-systemd: install
	sed 's|@NCEBPF@|$(abspath $(VENV))/bin/ncebpf|' packaging/systemd/ncebpf@.service \
		> /etc/systemd/system/ncebpf@.service
	systemctl daemon-reload 2>/dev/null || true

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
