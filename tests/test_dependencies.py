"""What `make run` installs is what ncebpf needs to run, and nothing the tests need."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-system-deps"

# Debian packages only the tests and benchmarks use (nsd is a DNS server: on an operator's
# machine it would be one more service to keep from starting, as would pmacct's daemons and
# darkstat, the peers of the CPU benchmark; chromium is a browser).
TEST_ONLY_PACKAGES = {"nsd", "gcc", "libc6-dev", "perl", "tcpdump", "pmacct", "darkstat",
                      "bpftool", "ethtool", "chromium", "vagrant", "vagrant-libvirt"}
# What only `make vm-test` uses on the host.
VM_ONLY_PACKAGES = {"qemu-system-x86", "kmod", "busybox-static"}
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "hatchling"}


def packages(*flags: str) -> list[str]:
    out = subprocess.run([str(SCRIPT), "--list", *flags], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.split()


def test_runtime_packages_are_what_ncebpf_uses() -> None:
    runtime = set(packages())
    assert not runtime & TEST_ONLY_PACKAGES
    assert {"python3-bpfcc", "libbpf1", "linux-libc-dev", "libpcap0.8"} <= runtime


def test_test_packages_add_the_test_tools() -> None:
    assert set(packages("--test")) == set(packages()) | TEST_ONLY_PACKAGES


def test_vm_packages_are_asked_for_alone() -> None:
    assert set(packages("--vm")) == set(packages()) | VM_ONLY_PACKAGES
    assert set(packages("--test", "--vm")) == (set(packages()) | TEST_ONLY_PACKAGES
                                               | VM_ONLY_PACKAGES)


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_runtime_python_dependencies_hold_no_dev_tool() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not requirement_names(project["dependencies"]) & DEV_TOOLS
    assert DEV_TOOLS <= requirement_names(project["optional-dependencies"]["dev"])


def test_make_run_installs_without_the_dev_extras() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run_install = makefile.split("\n$(INSTALLED):")[1].split("\n\n")[0]
    assert "pip install" in run_install and "[dev]" not in run_install
    assert "install-system-deps\n" in makefile.split("\n$(SYSTEM_DEPS):")[1].split("\n\n")[0]
    assert re.search(r"^run: install$", makefile, re.M)
    assert re.search(r"^lint: install-dev$", makefile, re.M)
