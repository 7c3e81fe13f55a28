"""What `make run` installs is what ncebpf needs to run, and nothing the tests need."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-system-deps"

# Debian 12's names; scripts/install-system-deps maps three of them on Ubuntu.
# Debian packages only the tests and benchmarks use (nsd is a DNS server: on an operator's
# machine it would be one more service to keep from starting, as would pmacct's daemons and
# darkstat, the peers of the CPU benchmark; chromium is a browser; postgresql and
# mariadb-server are the history tests' database servers, prometheus the metrics test's
# scraper, nfdump the IPFIX test's collector, openssh-server the fleet report test's sshd,
# tmux the terminal `ncebpf top` is read from).
TEST_ONLY_PACKAGES = {"nsd", "gcc", "libc6-dev", "perl", "tcpdump", "pmacct", "darkstat",
                      "bpftool", "ethtool", "chromium", "vagrant", "vagrant-libvirt",
                      "postgresql", "mariadb-server", "prometheus", "nfdump",
                      "openssh-server", "tmux"}
DEBIAN_RUNTIME_PACKAGES = {"python3", "python3-venv", "python3-bpfcc", "libbpf1",
                           "linux-libc-dev", "libpcap0.8", "iproute2", "openssh-client"}
# What only `make vm-test` uses on the host.
VM_ONLY_PACKAGES = {"qemu-system-x86", "kmod", "busybox-static"}
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "hatchling"}


def packages(*flags: str) -> list[str]:
    out = subprocess.run([str(SCRIPT), "--list", *flags], capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.split()


def os_release(tmp_path: Path, distribution: str, version: str) -> str:
    """An os-release(5) file for `distribution` `version`, as --os-release reads it."""
    path = tmp_path / f"os-release-{distribution}-{version}"
    path.write_text(f'PRETTY_NAME="{distribution} {version}"\nID={distribution}\n'
                    f'VERSION_ID="{version}"\n')
    return str(path)


# What Ubuntu 24.04 calls them: bpftool is a wrapper in linux-tools-common that runs the
# running kernel's bpftool (linux-tools-<release>); chromium is a snap behind a wrapper
# package; libpcap was renamed for 64-bit time_t.
RELEASE = os.uname().release
NOBLE_NAMES = {"bpftool": {"linux-tools-common", f"linux-tools-{RELEASE}"},
               "chromium": {"chromium-browser"}, "libpcap0.8": {"libpcap0.8t64"}}


def on_noble(names: set[str]) -> set[str]:
    return set().union(*(NOBLE_NAMES.get(name, {name}) for name in names))


@pytest.mark.parametrize(("distribution", "version"), [("debian", "12"), ("ubuntu", "24.04")])
def test_runtime_packages_are_what_ncebpf_uses(tmp_path: Path, distribution: str,
                                               version: str) -> None:
    release = os_release(tmp_path, distribution, version)
    runtime = set(packages("--os-release", release))
    assert not runtime & (TEST_ONLY_PACKAGES | on_noble(TEST_ONLY_PACKAGES))
    assert {"python3-bpfcc", "libbpf1", "linux-libc-dev"} <= runtime
    assert set(packages("--test", "--os-release", release)) > runtime


@pytest.mark.parametrize("flags", [(), ("--test",), ("--vm",), ("--test", "--vm")])
def test_debian_12_names(tmp_path: Path, flags: tuple[str, ...]) -> None:
    """Debian's lists are the Debian names above, whatever the machine running the test."""
    listed = set(packages(*flags, "--os-release", os_release(tmp_path, "debian", "12")))
    expected = DEBIAN_RUNTIME_PACKAGES
    if "--test" in flags:
        expected = expected | TEST_ONLY_PACKAGES
    if "--vm" in flags:
        expected = expected | VM_ONLY_PACKAGES
    assert listed == expected


def test_the_default_is_this_machines_distribution() -> None:
    assert packages("--test", "--vm") == packages("--test", "--vm",
                                                  "--os-release", "/etc/os-release")


def test_ubuntu_24_04_names(tmp_path: Path) -> None:
    noble = os_release(tmp_path, "ubuntu", "24.04")
    debian = os_release(tmp_path, "debian", "12")
    for flags in [(), ("--test",), ("--test", "--vm")]:
        assert set(packages(*flags, "--os-release", noble)) == on_noble(
            set(packages(*flags, "--os-release", debian)))
    listed = packages("--test", "--os-release", noble)
    assert {"linux-tools-common", f"linux-tools-{RELEASE}", "chromium-browser",
            "libpcap0.8t64"} <= set(listed)
    assert not {"bpftool", "chromium", "libpcap0.8"} & set(listed)


def test_ubuntu_has_bpftool_from_25_04(tmp_path: Path) -> None:
    listed = set(packages("--test", "--os-release", os_release(tmp_path, "ubuntu", "25.04")))
    assert "bpftool" in listed and "linux-tools-common" not in listed
    assert {"chromium-browser", "libpcap0.8t64"} <= listed


@pytest.mark.parametrize("args", [("--os-release",), ("--os-release", "/nonexistent"),
                                  ("--bogus",)])
def test_bad_arguments_are_refused(args: tuple[str, ...]) -> None:
    result = subprocess.run([str(SCRIPT), "--list", *args], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1


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
