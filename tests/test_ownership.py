"""One owner per instance name and per interface; dead instances are seen and cleaned up.

Issue 9, items 3 and 7: a second start on an interface must not take over
silently, two concurrent starts of one name must leave exactly one intact
survivor, and `status`/`stop` must see an instance that an outside
`kill -9` (the OOM killer) ended and remove what it left attached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, DaemonProcess, NetnsPair, run

pytestmark = pytest.mark.privileged


def frames_from(pair: NetnsPair, peer: str, count: int) -> list[bytes]:
    return [ip_frame(peer, pair.local_v4, "udp", 40)] * count


def dirs(workdir: Path, name: str) -> list[str]:
    for directory in ("state", "run"):
        (workdir / directory).mkdir(exist_ok=True)
    return ["--name", name, "--statedir", str(workdir / "state"), "--piddir", str(workdir / "run")]


def ncebpf(pair: NetnsPair, workdir: Path, name: str, *args: str) -> Any:
    names = ["--no-resolve"] if args[0] in ("start", "attach") else []
    return pair.ns(pair.local, *NCEBPF, *args, *names, *dirs(workdir, name), check=False)


def start(pair: NetnsPair, workdir: Path, name: str) -> int:
    # XDP and TC both: ownership must hold for every program ncebpf attaches.
    started = ncebpf(pair, workdir, name, "start", "--iface", pair.local_if, "--mode", "xdp")
    assert started.returncode == 0, started.stderr
    return int(started.stdout.split()[-1])


def dump(pair: NetnsPair, workdir: Path, name: str) -> dict[str, Any]:
    out = ncebpf(pair, workdir, name, "dump", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def xdp_prog_id(pair: NetnsPair) -> int:
    out = pair.ns(pair.local, "ip", "-j", "-d", "link", "show", pair.local_if).stdout
    return int(json.loads(out)[0]["xdp"]["prog"]["id"])


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_second_instance_on_the_interface_is_refused_and_the_first_keeps_counting(
        silent_pair: NetnsPair, workdir: Path) -> None:
    pair = silent_pair  # no IPv6: every frame on the link is one this test sent
    a_pid = start(pair, workdir, "a")
    try:
        prog_id = xdp_prog_id(pair)
        pair.inject_ingress(frames_from(pair, "10.77.6.1", 3), workdir)
        b = ncebpf(pair, workdir, "b", "start", "--iface", pair.local_if)
        assert b.returncode == 2, b.stderr
        assert one_line(b.stderr) == (
            f"Error: {pair.local_if} is already counted by ncebpf instance 'a' (pid {a_pid}): "
            "stop it first ('ncebpf stop --name a'), or count with --mode pcap, "
            "which attaches nothing")
        # b touched nothing of a's: same XDP program, TC filter in place, pid file intact.
        assert xdp_prog_id(pair) == prog_id
        assert "ncebpf_tc" in pair.tc_egress_filters()
        assert (workdir / "run" / "a.pid").read_text() == f"{a_pid}\n"
        assert not (workdir / "run" / "b.pid").exists()
        pair.inject_ingress(frames_from(pair, "10.77.6.2", 7), workdir)
        pair.inject_egress([ip_frame(pair.local_v4, "10.77.6.3", "udp", 40)] * 5, workdir)
        counted = dump(pair, workdir, "a")["peers"]
        assert {peer: counted[peer]["packets"] for peer in counted} == {
            "10.77.6.1": 3, "10.77.6.2": 7, "10.77.6.3": 5}
        status = ncebpf(pair, workdir, "a", "status")
        assert (status.returncode, status.stdout.strip()) == (0, f"a running, pid {a_pid}")
        # The refused run failed after the fork: its log says why, in one line.
        assert "already counted by ncebpf instance 'a'" in (workdir / "state" / "b.log").read_text()
    finally:
        assert ncebpf(pair, workdir, "a", "stop").returncode == 0
    assert pair.xdp_attached() == "" and "ncebpf_tc" not in pair.tc_egress_filters()


def test_a_foreground_attach_on_a_counted_interface_is_refused(pair: NetnsPair,
                                                                workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--mode", "xdp", name="a")
    try:
        b = ncebpf(pair, workdir, "b", "attach", "--iface", pair.local_if, "--mode", "tc")
        assert b.returncode == 2
        # `ip netns exec` execs the command: the daemon's pid is the Popen's.
        assert f"{pair.local_if} is already counted by ncebpf instance 'a' " \
            f"(pid {daemon.proc.pid}): stop it first" in one_line(b.stderr)
        assert "ncebpf_tc" in pair.tc_egress_filters() and "ncebpf_xdp" in pair.xdp_attached()
        pair.inject_ingress(frames_from(pair, "10.77.6.4", 11), workdir)
        assert daemon.dump()["peers"]["10.77.6.4"]["packets"] == 11  # type: ignore[index]
        # A libpcap capture attaches nothing: it may share the interface.
        pcap = DaemonProcess(pair, workdir, "--mode", "pcap", name="p")
        assert pcap.stop() == 0
    finally:
        assert daemon.stop() == 0


def test_concurrent_starts_of_one_name_leave_one_intact_survivor(pair: NetnsPair,
                                                                  workdir: Path) -> None:
    args = [*NCEBPF, "start", "--iface", pair.local_if, "--no-resolve", *dirs(workdir, "a")]
    for round_ in range(3):
        racers = [pair.popen(pair.local, *args) for _ in range(2)]
        results = [(p.wait(timeout=120), *p.communicate()) for p in racers]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        (winner,) = [int(out.split()[-1]) for code, out, _ in results if code == 0]
        (loser,) = [err for code, _, err in results if code == 2]
        assert one_line(loser) == (f"Error: an ncebpf instance named 'a' is already running "
                                   f"(pid {winner}): stop it, or choose another --name"), loser
        assert (workdir / "run" / "a.pid").read_text() == f"{winner}\n"
        status = ncebpf(pair, workdir, "a", "status")
        assert (status.returncode, status.stdout.strip()) == (0, f"a running, pid {winner}")
        peer = f"10.77.7.{round_ + 1}"
        pair.inject_ingress(frames_from(pair, peer, 13), workdir)
        assert dump(pair, workdir, "a")["peers"][peer]["packets"] == 13
        stopped = ncebpf(pair, workdir, "a", "stop")
        assert (stopped.returncode, stopped.stdout.strip()) == (
            0, f"a stopped (pid {winner}); final dump in {workdir}/state/a.json")
        assert pair.xdp_attached() == "" and "ncebpf_tc" not in pair.tc_egress_filters()


def test_status_and_stop_after_an_outside_kill_9(pair: NetnsPair, workdir: Path) -> None:
    pid = start(pair, workdir, "a")
    pair.inject_ingress(frames_from(pair, "10.77.8.1", 2), workdir)
    os.kill(pid, signal.SIGKILL)  # what the OOM killer does
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ncebpf_xdp" in pair.xdp_attached() and "ncebpf_tc" in pair.tc_egress_filters()

    status = ncebpf(pair, workdir, "a", "status")
    assert (status.returncode, status.stdout.strip()) == (
        1, f"a is dead (pid {pid}) and left ncebpf programs on {pair.local_if}: "
           "run 'ncebpf stop --name a' to remove them")
    stopped = ncebpf(pair, workdir, "a", "stop")
    assert stopped.returncode == 0, stopped.stderr
    said = stopped.stdout.strip()
    assert said.startswith(f"a was dead (pid {pid}): removed XDP program id "), said
    assert f"TC egress filter and clsact qdisc from {pair.local_if}" in said
    assert pair.xdp_attached() == ""
    assert "ncebpf_tc" not in pair.tc_egress_filters() and "clsact" not in pair.qdiscs()
    assert sorted(p.name for p in (workdir / "run").iterdir()) == ["a.lock"]
    assert ncebpf(pair, workdir, "a", "status").returncode == 3
    assert ncebpf(pair, workdir, "a", "stop").stdout.strip() == "a not running"
    start(pair, workdir, "a")  # and it starts again, without replacing anything
    assert ncebpf(pair, workdir, "a", "stop").returncode == 0


def test_stop_leaves_programs_of_a_live_instance_that_took_over_the_interface(
        pair: NetnsPair, workdir: Path) -> None:
    pid = start(pair, workdir, "a")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    b_pid = start(pair, workdir, "b")  # replaces a's leftovers: it holds the interface
    try:
        prog_id = xdp_prog_id(pair)
        status = ncebpf(pair, workdir, "a", "status")
        assert (status.returncode, status.stdout.strip()) == (3, "a not running")
        stopped = ncebpf(pair, workdir, "a", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"a was dead (pid {pid}): removed its stale files; {pair.local_if} is counted "
            f"by ncebpf instance 'b' (pid {b_pid}) now, whose programs stay")
        assert xdp_prog_id(pair) == prog_id
        pair.inject_ingress(frames_from(pair, "10.77.8.2", 5), workdir)
        assert dump(pair, workdir, "b")["peers"]["10.77.8.2"]["packets"] == 5
    finally:
        assert ncebpf(pair, workdir, "b", "stop").returncode == 0


def test_detach_refuses_while_an_instance_counts_on_the_interface(pair: NetnsPair,
                                                                  workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--mode", "xdp", name="a")
    try:
        refused = pair.ns(pair.local, *NCEBPF, "detach", "--iface", pair.local_if, check=False)
        assert refused.returncode == 2
        assert one_line(refused.stderr).startswith(
            f"Error: {pair.local_if} is counted by ncebpf instance 'a' (pid ")
        assert "'ncebpf stop --name a' stops it and removes its programs" in refused.stderr
        assert "ncebpf_xdp" in pair.xdp_attached() and "ncebpf_tc" in pair.tc_egress_filters()
        pair.inject_ingress(frames_from(pair, "10.77.9.1", 17), workdir)
        assert daemon.dump()["peers"]["10.77.9.1"]["packets"] == 17  # type: ignore[index]
    finally:
        assert daemon.stop() == 0


HOLDER = """
import sys, time
from pathlib import Path
from ncebpf.config import Instance
from ncebpf.locks import InstanceLock
with InstanceLock(Instance(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[2]))):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def open_piddir(privileged: None) -> Iterator[Path]:
    """A pid directory that another user can read (pytest's own tmp_path is root's only)."""
    made = Path(tempfile.mkdtemp(prefix="nct-run-"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


def test_stop_without_the_right_to_signal_says_so(open_piddir: Path) -> None:
    piddir = open_piddir
    with subprocess.Popen([sys.executable, "-c", HOLDER, "x", str(piddir)],
                          stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            out = run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *NCEBPF,
                      "stop", "--name", "x", "--piddir", str(piddir), check=False)
            assert out.returncode == 2
            assert one_line(out.stderr) == (f"Error: cannot signal x (pid {holder.pid}): that "
                                            "needs root or the user who started it")
            assert holder.poll() is None
        finally:
            holder.kill()
