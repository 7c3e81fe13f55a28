"""What Net::Connection::Sniffer users relied on, with real traffic and processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ip_frame
from ncebpf.lifecycle import is_ncebpf_process
from tests.netns import NCEBPF, DaemonProcess, NetnsPair
from tests.test_dump import perl_read

pytestmark = pytest.mark.privileged


def frames_from(pair: NetnsPair, peer: str, count: int, size: int = 40) -> list[bytes]:
    return [ip_frame(peer, pair.local_v4, "udp", size)] * count


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_perl_dump_of_live_traffic_matches_the_json_dump(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "host", pair.local_v4)
    try:
        pair.inject_ingress(frames_from(pair, "10.77.3.1", 7) + frames_from(pair, "10.77.3.2", 3),
                            workdir)
        json_dump = daemon.dump()
        stats = workdir / "state" / "t.stats"
        header = stats.read_text().split("{")[0]
    finally:
        assert daemon.stop() == 0
    from_perl = perl_read(stats)
    assert set(from_perl) == set(json_dump["peers"])
    for address, fields in json_dump["peers"].items():
        got = from_perl[address]
        assert isinstance(got, dict)
        assert all(got[k] == fields[k] for k in ("C", "E", "N", "S", "T")), address
        assert all(int(got[k]) == int(f"{fields[k]:.0f}") for k in ("B", "R", "W")), address
    assert from_perl["10.77.3.1"]["C"] == 7  # type: ignore[index]
    assert f"# device:\t{pair.local_if}\tnon-promiscuous" in header
    assert f"# bpf:\t\thost {pair.local_v4}" in header
    assert "# users:\t2" in header


def test_usr1_dumps_and_hup_starts_over(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--interval", "0.2")
    json_path = workdir / "state" / "t.json"
    try:
        pair.inject_ingress(frames_from(pair, "10.77.3.3", 5), workdir)
        daemon.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: json_path.exists() and "10.77.3.3" in read_json(json_path)["peers"])
        first = read_json(json_path)
        time.sleep(1.1)  # a new start second
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.dump()["peers"] == {})
        pair.inject_ingress(frames_from(pair, "10.77.3.4", 2), workdir)
        after = daemon.dump()
    finally:
        assert daemon.stop() == 0
    assert first["peers"]["10.77.3.3"]["packets"] == 5
    assert list(after["peers"]) == ["10.77.3.4"] and after["peers"]["10.77.3.4"]["packets"] == 2
    assert after["start"] > first["start"]
    assert after["totals"]["packets"] == 2  # totals start over too


def test_term_arriving_with_hup_wins(pair: NetnsPair, workdir: Path) -> None:
    """Upstream §15.13 turned a pending TERM into a reset; §15.14 left the last dump in .tmp."""
    daemon = DaemonProcess(pair, workdir)
    pair.inject_ingress(frames_from(pair, "10.77.3.5", 4), workdir)
    daemon.proc.send_signal(signal.SIGSTOP)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.send_signal(signal.SIGCONT)
    _, stderr = daemon.proc.communicate(timeout=30)
    assert daemon.proc.returncode == 0, stderr
    final = read_json(workdir / "state" / "t.json")
    assert final["peers"]["10.77.3.5"]["packets"] == 4
    assert perl_read(workdir / "state" / "t.stats")["10.77.3.5"]["C"] == 4  # type: ignore[index]
    history = ("t.db", "t.db-wal", "t.db-shm", "t.history")  # the history's, issue 14
    assert sorted(p.name for p in (workdir / "state").iterdir() if p.name not in history) == \
        ["t.json", "t.stats"]
    assert pair.xdp_attached() == ""


UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(float(sys.argv[4]))
for message in sys.argv[5:]:
    s.sendto(message.encode(), (sys.argv[2], int(sys.argv[3])))
    try:
        print(s.recv(512).decode())
    except socket.timeout:
        print("(no reply)")
"""


def udp_ask(pair: NetnsPair, ns: str, source: str, *messages: str, wait: float = 5.0
            ) -> list[str]:
    out = pair.ns(ns, sys.executable, "-c", UDP_CLIENT, source, pair.local_v4, "7777",
                  str(wait), *messages)
    return out.stdout.splitlines()


def test_udp_dump_listener(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--port", "7777", "--listen", pair.local_v4)
    json_path = workdir / "state" / "t.json"
    try:
        pair.inject_ingress(frames_from(pair, "10.77.3.6", 3), workdir)
        before = time.time()
        (reply,) = udp_ask(pair, pair.local, pair.local_v4, "dump")
        assert reply.startswith("OK ")
        stamp = int(reply.split()[1])
        assert stamp >= int(before)
        # The dump is written when OK arrives (upstream answered before writing).
        written = read_json(json_path)
        assert written["current"] >= int(before)
        assert written["peers"]["10.77.3.6"]["packets"] == 3
        mtime = json_path.stat().st_mtime_ns
        time.sleep(1.1)
        assert udp_ask(pair, pair.local, pair.local_v4, "dumpster", "") == ["??", "??"]
        assert json_path.stat().st_mtime_ns == mtime  # nothing was dumped
        assert udp_ask(pair, pair.remote, pair.remote_v4, "dump", wait=1.0) == ["(no reply)"]
        assert json_path.stat().st_mtime_ns == mtime
        replies = udp_ask(pair, pair.local, pair.local_v4, *["dump"] * 5)
        assert all(r.startswith("OK ") for r in replies)
    finally:
        assert daemon.stop() == 0
    assert f"refused a dump request from {pair.remote_v4}" in daemon.stderr


def ncebpf(pair: NetnsPair, workdir: Path, *args: str, check: bool = False) -> Any:
    # Tests never ask the machine's DNS servers.
    names = ["--no-resolve"] if args[0] in ("start", "restart") else []
    return pair.ns(pair.local, *NCEBPF, *args, *names, "--name", "bg", "--statedir",
                   str(workdir / "state"), "--piddir", str(workdir / "run"), check=check)


def test_start_status_restart_stop(pair: NetnsPair, workdir: Path) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    assert ncebpf(pair, workdir, "status").returncode == 3
    started = ncebpf(pair, workdir, "start", "--iface", pair.local_if)
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split()[-1])
    assert "ncebpf_tc" in pair.tc_egress_filters()  # counting when start returns
    status = ncebpf(pair, workdir, "status")
    assert (status.returncode, status.stdout.strip()) == (0, f"bg running, pid {pid}")
    again = ncebpf(pair, workdir, "start", "--iface", pair.local_if)
    assert again.returncode == 2 and "already running" in again.stderr
    pair.inject_ingress(frames_from(pair, "10.77.3.7", 6), workdir)
    dumped = json.loads(ncebpf(pair, workdir, "dump", check=True).stdout)
    assert dumped["peers"]["10.77.3.7"]["packets"] == 6
    perl = ncebpf(pair, workdir, "dump", "--format", "perl", check=True).stdout
    assert perl.startswith("\n# Net::Connection::Sniffer version 0.36\n")
    assert "\t'10.77.3.7'\t=> {\n\t\tB\t=> " in perl

    restarted = ncebpf(pair, workdir, "restart", "--iface", pair.local_if)
    assert restarted.returncode == 0, restarted.stderr
    new_pid = int(restarted.stdout.split()[-1])
    assert new_pid != pid and not is_ncebpf_process(pid)  # gone (or an unreaped zombie)
    assert (workdir / "run" / "bg.pid").read_text().strip() == str(new_pid)

    stopped = ncebpf(pair, workdir, "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert pair.xdp_attached() == "" and pair.tc_egress_filters() == ""
    assert not (workdir / "run" / "bg.pid").exists()
    assert ncebpf(pair, workdir, "status").returncode == 3
    assert "not running" in ncebpf(pair, workdir, "stop").stdout


def test_stop_escalates_and_cleans_up(pair: NetnsPair, workdir: Path) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    started = ncebpf(pair, workdir, "start", "--iface", pair.local_if)
    pid = int(started.stdout.split()[-1])
    os.kill(pid, signal.SIGSTOP)  # a daemon that no longer answers
    stopped = ncebpf(pair, workdir, "stop", "--timeout", "1")
    assert stopped.returncode == 1, stopped.stderr  # killing it lost counts: a failure
    assert "was killed: its counts since the last dump are lost" in stopped.stderr
    assert pair.xdp_attached() == "" and pair.tc_egress_filters() == ""
    assert not (workdir / "run" / "bg.pid").exists()


def test_stale_pid_file_and_relative_paths(pair: NetnsPair, workdir: Path) -> None:
    (workdir / "run").mkdir()
    (workdir / "state").mkdir()
    (workdir / "run" / "bg.pid").write_text("999999\n")
    assert ncebpf(pair, workdir, "status").returncode == 3
    started = pair.ns(pair.local, "sh", "-c", f"cd {workdir} && {' '.join(NCEBPF)} start "
                      f"--iface {pair.local_if} --no-resolve --name bg --statedir state "
                      "--piddir run")
    assert started.returncode == 0, started.stderr
    assert ncebpf(pair, workdir, "stop").returncode == 0
    assert (workdir / "state" / "bg.json").exists()  # the final dump, despite chdir('/')


def test_start_reports_a_failure_that_happens_after_the_fork(pair: NetnsPair,
                                                             workdir: Path) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    failed = ncebpf(pair, workdir, "start", "--iface", pair.local_if,
                    "--listen", "10.77.250.250", "--port", "7777")
    assert failed.returncode != 0
    assert "could not bind 'listen on' to port 7777" in failed.stderr
    assert pair.xdp_attached() == ""


def test_promiscuous_for_a_neighbour_host_and_restored(pair: NetnsPair, workdir: Path) -> None:
    """The filter names a neighbour, not us: a mirror port. No --iface: upstream's choice."""
    assert promiscuity(pair) == 0
    daemon = DaemonProcess(pair, workdir, "--filter", f"host {pair.remote_v4}",
                           with_iface=False)
    try:
        assert promiscuity(pair) == 1
        dump = daemon.dump()
        header = (workdir / "state" / "t.stats").read_text()
    finally:
        assert daemon.stop() == 0
    assert dump["device"] == pair.local_if and dump["promiscuous"] is True
    assert f"# device:\t{pair.local_if}\tpromiscuous" in header
    assert promiscuity(pair) == 0
    DaemonProcess(pair, workdir, "--filter", f"host {pair.remote_v4}", with_iface=False).kill()
    assert promiscuity(pair) == 0  # the kernel dropped it with the killed process's socket


def promiscuity(pair: NetnsPair) -> int:
    """The device's promiscuity count (packet-socket memberships and the PROMISC flag)."""
    words = pair.ns(pair.local, "ip", "-d", "link", "show", pair.local_if).stdout.split()
    return int(words[words.index("promiscuity") + 1])
