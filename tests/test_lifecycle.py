"""Attach, crash, recover, detach, and refuse what is not ours."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, TESTS, DaemonProcess, NetnsPair, run

pytestmark = pytest.mark.privileged


def frames_from(peer: str, pair: NetnsPair, count: int) -> list[bytes]:
    return [ip_frame(peer, pair.local_v4, "udp", 50)] * count


def test_kill_9_leaves_programs_that_the_next_run_replaces(pair: NetnsPair,
                                                          workdir: Path) -> None:
    first = DaemonProcess(pair, workdir, "--mode", "xdp")
    pair.inject_ingress(frames_from("10.77.4.1", pair, 5), workdir)
    first.kill()
    assert "ncebpf_xdp" in pair.xdp_attached()
    assert "ncebpf_tc" in pair.tc_egress_filters()

    second = DaemonProcess(pair, workdir, "--mode", "xdp")
    try:
        assert "replaced ncebpf's XDP program" in _stderr_so_far(second)
        pair.inject_ingress(frames_from("10.77.4.2", pair, 7), workdir)
        dump = second.dump()
    finally:
        assert second.stop() == 0
    assert dump["peers"]["10.77.4.2"]["packets"] == 7
    assert "10.77.4.1" not in dump["peers"]  # that run's counts died with it
    assert pair.tc_egress_filters().count("ncebpf_tc") == 0
    assert pair.xdp_attached() == ""
    assert "clsact" not in pair.qdiscs()


def _stderr_so_far(daemon: DaemonProcess) -> str:
    assert daemon.proc.stderr is not None
    os.set_blocking(daemon.proc.stderr.fileno(), False)
    return daemon.proc.stderr.read() or ""


def test_detach_removes_what_a_killed_run_left(pair: NetnsPair, workdir: Path) -> None:
    DaemonProcess(pair, workdir, "--mode", "xdp").kill()
    assert "ncebpf_xdp" in pair.xdp_attached()
    out = pair.ns(pair.local, *NCEBPF, "detach", "--iface", pair.local_if, "--name", "t",
                  "--piddir", str(workdir / "run")).stdout
    assert "XDP program" in out and "TC egress filter" in out
    assert "stale files" in out  # what `stop` would have removed goes too
    assert [name for name in ("t.pid", "t.sock", "t.iface")
            if (workdir / "run" / name).exists()] == []
    assert pair.xdp_attached() == ""
    assert pair.tc_egress_filters() == ""
    assert "clsact" not in pair.qdiscs()
    again = pair.ns(pair.local, *NCEBPF, "detach", "--iface", pair.local_if).stdout
    assert again.startswith("nothing of ncebpf's")


def test_foreign_xdp_program_is_kept_unless_forced(pair: NetnsPair, workdir: Path) -> None:
    pair.ns(pair.local, sys.executable, str(TESTS / "foreign_xdp.py"), pair.local_if)
    assert "foreign_pass" in pair.xdp_attached()

    refused = pair.ns(pair.local, *NCEBPF, "attach", "--mode", "xdp", "--iface", pair.local_if,
                      "--statedir", str(workdir), "--piddir", str(workdir), check=False)
    assert refused.returncode == 2
    assert "foreign_pass" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "foreign_pass" in pair.xdp_attached()

    forced = DaemonProcess(pair, workdir, "--mode", "xdp", "--force")
    try:
        assert "ncebpf_xdp" in pair.xdp_attached()
    finally:
        assert forced.stop() == 0
    assert "foreign_pass" in pair.xdp_attached()  # restored on exit


def test_sigint_detaches_like_sigterm(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir)
    assert daemon.stop(signal.SIGINT) == 0
    assert pair.xdp_attached() == "" and pair.tc_egress_filters() == ""
    assert (workdir / "state" / "t.json").is_file()


def test_second_instance_with_the_same_name_is_refused(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--mode", "xdp")
    try:
        again = pair.ns(pair.local, *NCEBPF, "attach", "--iface", pair.local_if, *daemon.args,
                        check=False)
        assert again.returncode == 2 and "already running" in again.stderr
        assert "ncebpf_xdp" in pair.xdp_attached()  # the refused run touched nothing
    finally:
        assert daemon.stop() == 0


@pytest.mark.usefixtures("privileged")
class TestErrors:
    def test_unknown_interface(self, tmp_path: Path) -> None:
        out = run(*NCEBPF, "attach", "--iface", "nct-nonesuch", "--statedir", str(tmp_path),
                  "--piddir", str(tmp_path), check=False)
        assert out.returncode == 2
        assert out.stderr.strip() == ("Error: no network interface named 'nct-nonesuch': "
                                      "see 'ip -br link' for the names")

    def test_missing_privileges(self, tmp_path: Path) -> None:
        out = run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all", *NCEBPF, "attach", "--iface", "lo",
                  "--statedir", str(tmp_path), "--piddir", str(tmp_path), check=False)
        assert out.returncode == 2, out.stderr
        assert ("needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN for the kernel path, "
                "or CAP_NET_RAW") in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1

    def test_bcc_missing_names_the_package(self, tmp_path: Path) -> None:
        shadow = tmp_path / "shadow" / "bcc"
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text("raise ImportError('no bcc here')\n")
        env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
        import subprocess

        out = subprocess.run([*NCEBPF, "attach", "--mode", "xdp", "--iface", "lo", "--statedir",
                              str(tmp_path), "--piddir", str(tmp_path)], capture_output=True,
                             text=True, env=env, timeout=60)
        assert out.returncode == 2
        assert "apt-get install python3-bpfcc" in out.stderr

    def test_dump_without_instance(self, tmp_path: Path) -> None:
        out = run(*NCEBPF, "dump", "--name", "none", "--piddir", str(tmp_path), check=False)
        assert out.returncode == 1
        assert "no ncebpf instance named 'none' is running" in out.stderr


def test_interface_that_disappears_ends_the_run_with_a_final_dump(pair: NetnsPair,
                                                                  workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir, "--interval", "0.2")
    pair.inject_ingress(frames_from("10.77.4.3", pair, 3), workdir)
    pair.ns(pair.local, "ip", "link", "del", pair.local_if)
    _, stderr = daemon.proc.communicate(timeout=30)
    assert daemon.proc.returncode == 1
    assert "disappeared; the final dump is in" in stderr
    final = json.loads((workdir / "state" / "t.json").read_text())
    assert final["peers"]["10.77.4.3"]["packets"] == 3


def test_dump_output_to_a_file(pair: NetnsPair, workdir: Path) -> None:
    daemon = DaemonProcess(pair, workdir)
    try:
        pair.inject_ingress(frames_from("10.77.4.4", pair, 2), workdir)
        target = workdir / "copy.json"
        run(*NCEBPF, "dump", "--output", str(target), *daemon.args)
    finally:
        assert daemon.stop() == 0
    assert json.loads(target.read_text())["peers"]["10.77.4.4"]["packets"] == 2


def test_dump_output_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(pair: NetnsPair,
                                                                    workdir: Path) -> None:
    """`--output /dev/null` once replaced /dev/null with a regular file (atomic rename)."""
    import stat
    import threading

    fifo = workdir / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    daemon = DaemonProcess(pair, workdir)
    try:
        pair.inject_ingress(frames_from("10.77.4.5", pair, 3), workdir)
        run(*NCEBPF, "dump", "--output", str(fifo), *daemon.args)
    finally:
        assert daemon.stop() == 0
    reader.join(timeout=30)
    assert json.loads(received[0])["peers"]["10.77.4.5"]["packets"] == 3
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_named_instances_run_side_by_side(workdir: Path, privileged: None) -> None:
    with NetnsPair() as first, NetnsPair() as second:
        one = DaemonProcess(first, workdir, name="one")
        two = DaemonProcess(second, workdir, name="two")
        try:
            first.inject_ingress(frames_from("10.77.5.1", first, 5), workdir)
            second.inject_ingress(frames_from("10.77.5.2", second, 7), workdir)
            dumps = one.dump(), two.dump()
        finally:
            assert one.stop() == 0 and two.stop() == 0
    assert dumps[0]["name"] == "one" and dumps[1]["name"] == "two"
    assert dumps[0]["peers"]["10.77.5.1"]["packets"] == 5 and "10.77.5.2" not in dumps[0]["peers"]
    assert dumps[1]["peers"]["10.77.5.2"]["packets"] == 7 and "10.77.5.1" not in dumps[1]["peers"]
