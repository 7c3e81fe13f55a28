"""The systemd unit: how it runs ncebpf, what it may do, and that systemd accepts it."""

from __future__ import annotations

import configparser
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Attached:
    status: int  # exit status
    dump: dict[str, object] | None  # the final dump
    stderr: str
    pinned: bool  # its peer map was pinned, seen from its own mount namespace while it ran
    systemd_status: str  # the STATUS= it sent to systemd with READY=1 (NOTIFY_SOCKET)


def attach_with(pair: NetnsPair, workdir: Path, capabilities: list[str], mode: str,
                sandbox: Path | None = None) -> Attached:
    """Run `ncebpf attach` as root bounded to capabilities (as the unit does), on a
    neighbour's address (so it goes promiscuous); count 7 frames in and 5 out.

    sandbox: a unit file whose /sys sandbox ncebpf runs in (tests/unit_sandbox.py); without
    it, ncebpf sees the /sys `ip netns exec` gives it, where no bpffs is mounted.
    """
    for directory in ("state", "run", "cache"):
        (workdir / directory).mkdir(exist_ok=True)
    args = ["--name", "u", "--statedir", str(workdir / "state"), "--piddir", str(workdir / "run")]
    bounding = "-all" + "".join(f",+{cap}" for cap in capabilities)
    sandboxed = [] if sandbox is None else [
        "unshare", "-m", "--propagation", "private", sys.executable,
        str(ROOT / "tests" / "unit_sandbox.py"), str(sandbox), "--"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(workdir / "notify"))
    notify.setblocking(False)
    proc = pair.popen(pair.local, *sandboxed, "env", f"NCEBPF_CACHE_DIR={workdir / 'cache'}",
                      f"NOTIFY_SOCKET={workdir / 'notify'}",
                      "setpriv", f"--bounding-set={bounding}", "--inh-caps=-all",
                      *NCEBPF, "attach", "--no-resolve", "--mode", mode, *args,
                      "--filter", "host 10.77.0.9")
    deadline = time.monotonic() + 60
    while not (workdir / "run" / "u.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            notify.close()
            return Attached(proc.returncode, None, err, False, "")
        time.sleep(0.05)
    pid = (workdir / "run" / "u.pid").read_text().strip()
    pinned = run("nsenter", "-t", pid, "-m", "test", "-e", "/sys/fs/bpf/ncebpf/u/peers",
                 check=False).returncode == 0
    pair.inject_ingress([ip_frame("10.77.1.1", "10.77.0.9", "udp", 100)] * 7, workdir)
    pair.inject_egress([ip_frame("10.77.0.9", "10.77.1.2", "udp", 50)] * 5, workdir)
    run(*NCEBPF, "dump", "--format", "json", *args)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    statuses = []
    with contextlib.suppress(BlockingIOError):
        while True:
            statuses += [line.removeprefix("STATUS=") for line in
                         notify.recv(4096).decode().splitlines() if line.startswith("STATUS=")]
    notify.close()
    return Attached(proc.returncode, json.loads((workdir / "state" / "u.json").read_text()),
                    err, pinned, statuses[0] if statuses else "")


def counts(dump: dict[str, object]) -> dict[str, tuple[int, int]]:
    peers = dump["peers"]
    assert isinstance(peers, dict)
    return {peer: (v["packets"], v["bytes"]) for peer, v in peers.items()}


@pytest.mark.privileged
def test_the_units_capabilities_count_in_the_kernel(silent_pair: NetnsPair,
                                                    workdir: Path) -> None:
    ran = attach_with(silent_pair, workdir, granted_capabilities(), "xdp")
    assert ran.status == 0 and ran.dump is not None, ran.stderr
    assert ran.dump["mode"] == "xdp" and ran.dump["promiscuous"] is True
    assert counts(ran.dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}
    # No bpffs in `ip netns exec`'s /sys, and the unit's capabilities cannot mount one:
    # counted all the same, unpinned, and said once with the way out.
    assert not ran.pinned
    assert ran.stderr.count("cannot pin the counting maps") == 1, ran.stderr
    assert "mount -t bpf bpf /sys/fs/bpf" in ran.stderr


def unit_without(tmp_path: Path, *keys: str) -> Path:
    """The unit with the lines setting keys left out."""
    edited = tmp_path / "ncebpf@.service"
    edited.write_text("".join(line for line in UNIT.read_text().splitlines(keepends=True)
                              if line.split("=", 1)[0] not in keys))
    return edited


@pytest.mark.privileged
def test_under_the_units_sandbox_the_maps_are_pinned(silent_pair: NetnsPair,
                                                     workdir: Path) -> None:
    ran = attach_with(silent_pair, workdir, granted_capabilities(), "tc", sandbox=UNIT)
    assert ran.status == 0 and ran.dump is not None, ran.stderr
    assert counts(ran.dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}
    assert ran.pinned, ran.stderr
    assert "cannot pin" not in ran.stderr
    assert ran.systemd_status == f"counting on {silent_pair.local_if} (tc)"


@pytest.mark.privileged
def test_without_the_units_pin_directory_its_sandbox_refuses_the_pins(silent_pair: NetnsPair,
                                                                      workdir: Path) -> None:
    """ProtectKernelTunables= alone leaves /sys/fs/bpf read-only: what the unit's
    ExecStartPre= and ReadWritePaths= are there for. Counting goes on, unpinned."""
    old = unit_without(workdir, "ExecStartPre", "ReadWritePaths")
    ran = attach_with(silent_pair, workdir, granted_capabilities(), "tc", sandbox=old)
    assert ran.status == 0 and ran.dump is not None, ran.stderr
    assert counts(ran.dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}
    assert not ran.pinned
    assert ran.stderr.count("cannot pin the counting maps") == 1, ran.stderr
    assert "Read-only file system" in ran.stderr and "ReadWritePaths=" in ran.stderr
    assert ran.systemd_status == \
        f"counting on {silent_pair.local_if} (tc), maps not pinned: see the log"


@pytest.mark.privileged
@pytest.mark.parametrize("missing", ["bpf", "perfmon", "net_admin", "net_raw"])
def test_each_of_the_units_capabilities_is_needed(silent_pair: NetnsPair, workdir: Path,
                                                  missing: str) -> None:
    fewer = [cap for cap in granted_capabilities() if cap != missing]
    ran = attach_with(silent_pair, workdir, fewer, "auto")
    if missing == "net_raw":  # the kernel path works, going promiscuous does not
        assert ran.status == 1 and ran.dump is None, ran.stderr
        return
    # Without one of the kernel path's capabilities, auto counts with libpcap instead.
    assert ran.status == 0 and ran.dump is not None, ran.stderr
    assert "counting with libpcap in user space, not in the kernel" in ran.stderr
    assert ran.dump["mode"] == "pcap" and ran.dump["promiscuous"] is True
    assert counts(ran.dump) == {"10.77.1.1": (7, 7 * 142), "10.77.1.2": (5, 5 * 92)}
