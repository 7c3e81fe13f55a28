"""The systemd unit: how it runs ncebpf, what it may do, and that systemd accepts it."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ncebpf.config import DEFAULT_PIDDIR, DEFAULT_STATEDIR
from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, NetnsPair, run

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "systemd" / "ncebpf@.service"


def unit() -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(UNIT.read_text())
    return parsed


def granted_capabilities() -> list[str]:
    """The unit's CapabilityBoundingSet in setpriv's spelling: ['bpf', 'net_admin', ...]."""
    names = unit()["Service"]["CapabilityBoundingSet"].split()
    assert all(name.startswith("CAP_") for name in names), names
    return [name.removeprefix("CAP_").lower() for name in names]


def test_unit_runs_the_instance_in_the_foreground_with_its_own_config() -> None:
    service = unit()["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[0] == "@NCEBPF@"  # filled in by `make install-systemd`
    assert exec_start[1:] == ["attach", "--name", "%i", "--config", "/etc/ncebpf/%i.toml"]
    assert service["KillSignal"] == "SIGTERM"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_directories_are_the_ones_ncebpf_and_its_dump_command_use() -> None:
    # No --statedir/--piddir on ExecStart: the TOML's sniffer/piddir, else ncebpf's
    # defaults, so `ncebpf dump --name X` looks where the service writes.
    service = unit()["Service"]
    assert Path("/var/lib") / service["StateDirectory"] == DEFAULT_STATEDIR
    assert Path("/run") / service["RuntimeDirectory"] == DEFAULT_PIDDIR
    assert service["RuntimeDirectoryPreserve"] == "yes"  # instances share it
    assert service["CacheDirectory"] == "ncebpf"  # /var/cache/ncebpf: the header stub tree


def test_readiness_and_stop_are_bounded() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert 0 < int(service["TimeoutStopSec"]) <= 60
    assert service["Restart"] == "on-failure"
    # A usage or configuration error (exit 2) is not retried forever.
    assert "2" in service["RestartPreventExitStatus"].split()


def test_privileges_are_bounded() -> None:
    service = unit()["Service"]
    assert sorted(granted_capabilities()) == ["bpf", "net_admin", "net_raw", "perfmon"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["PrivateTmp"] == "yes"  # BCC writes there; strict would leave it read-only
    assert "User" not in service  # root, so that `ncebpf dump` and `make run` share the files


def test_install_systemd_runs_a_venv_of_its_own() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\ninstall-systemd:")[1].split("\n\n")[0]
    assert re.search(r"^PREFIX \?= /opt/ncebpf$", makefile, re.M)
    assert "--system-site-packages $(PREFIX)" in target
    assert "pip install" in target and " -e " not in target
    assert "s|@NCEBPF@|$(PREFIX)/bin/ncebpf|" in target
    assert ".venv" not in target and "$(VENV)" not in target


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    installed = tmp_path / "ncebpf@.service"
    installed.write_text(UNIT.read_text().replace("@NCEBPF@", sys.executable))
    out = subprocess.run(["systemd-analyze", "verify", str(installed)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ncebpf@.service" not in out.stderr  # unknown keys are only warned about


def attach_with(pair: NetnsPair, workdir: Path, capabilities: list[str], mode: str
                ) -> tuple[int, dict[str, object] | None, str]:
    """Run `ncebpf attach` as root bounded to capabilities (as the unit does), on a
    neighbour's address (so it goes promiscuous); count 7 frames in and 5 out.

    Returns (exit status, the final dump or None, stderr).
    """
    for directory in ("state", "run", "cache"):
        (workdir / directory).mkdir(exist_ok=True)
    args = ["--name", "u", "--statedir", str(workdir / "state"), "--piddir", str(workdir / "run")]
    bounding = "-all" + "".join(f",+{cap}" for cap in capabilities)
    proc = pair.popen(pair.local, "env", f"NCEBPF_CACHE_DIR={workdir / 'cache'}",
                      "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                      *NCEBPF, "attach", "--no-resolve", "--mode", mode, *args,
                      "--filter", "host 10.77.0.9")
    deadline = time.monotonic() + 60
    while not (workdir / "run" / "u.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            return proc.returncode, None, err
        time.sleep(0.05)
    pair.inject_ingress([ip_frame("10.77.1.1", "10.77.0.9", "udp", 100)] * 7, workdir)
    pair.inject_egress([ip_frame("10.77.0.9", "10.77.1.2", "udp", 50)] * 5, workdir)
    run(*NCEBPF, "dump", "--format", "json", *args)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    return proc.returncode, json.loads((workdir / "state" / "u.json").read_text()), err


def counts(dump: dict[str, object]) -> dict[str, tuple[int, int]]:
    peers = dump["peers"]
    assert isinstance(peers, dict)
    return {peer: (v["packets"], v["bytes"]) for peer, v in peers.items()}


@pytest.mark.privileged
def test_the_units_capabilities_count_in_the_kernel(silent_pair: NetnsPair,
                                                    workdir: Path) -> None:
    status, dump, err = attach_with(silent_pair, workdir, granted_capabilities(), "xdp")
    assert status == 0 and dump is not None, err
    assert dump["mode"] == "xdp" and dump["promiscuous"] is True
    assert counts(dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}


@pytest.mark.privileged
@pytest.mark.parametrize("missing", ["bpf", "perfmon", "net_admin", "net_raw"])
def test_each_of_the_units_capabilities_is_needed(silent_pair: NetnsPair, workdir: Path,
                                                  missing: str) -> None:
    fewer = [cap for cap in granted_capabilities() if cap != missing]
    status, dump, err = attach_with(silent_pair, workdir, fewer, "auto")
    if missing == "net_raw":  # the kernel path works, going promiscuous does not
        assert status == 1 and dump is None, err
        return
    # Without one of the kernel path's capabilities, auto counts with libpcap instead.
    assert status == 0 and dump is not None, err
    assert "counting with libpcap in user space, not in the kernel" in err
    assert dump["mode"] == "pcap" and dump["promiscuous"] is True
    assert counts(dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}
