"""No count lost through `restart`, `kill -9` + `start`, `stop --keep` + `start`, a new
data set, and a simulated reboot (issue 13, items 1 and 2): real daemons, real traffic
at a steady rate while the daemon changes hands, exact counts per peer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, NetnsPair, run

pytestmark = pytest.mark.privileged

PEERS = {"10.77.0.2": 101, "10.77.0.3": 53}  # frames per round from each peer


@pytest.fixture
def bpffs(workdir: Path, privileged: None) -> Iterator[Path]:
    """A private bpf file system for the test's pins, unmounted (pins and all) after."""
    path = workdir / "bpf"
    path.mkdir()
    run("mount", "-t", "bpf", "bpf", str(path))
    try:
        yield path
    finally:
        run("umount", "-l", str(path), check=False)


def ncebpf(pair: NetnsPair, workdir: Path, bpffs: Path, *args: str,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    extra = ["--no-resolve", "--iface", pair.local_if, "--interval", "0.2"] \
        if args[0] in ("start", "restart") else []
    return pair.ns(pair.local, *NCEBPF, *args, *extra, "--name", "t", "--statedir",
                   str(workdir / "state"), "--piddir", str(workdir / "run"), "--bpffs",
                   str(bpffs), check=check)


def frames(pair: NetnsPair) -> list[bytes]:
    return [ip_frame(peer, pair.local_v4, "udp", 60) for peer, n in PEERS.items()
            for _ in range(n)]


def dumped(pair: NetnsPair, workdir: Path, bpffs: Path) -> dict[str, int]:
    out = ncebpf(pair, workdir, bpffs, "dump", "--format", "json").stdout
    peers = json.loads(out)["peers"]
    return {peer: peers[peer]["packets"] for peer in PEERS if peer in peers}


def through(pair: NetnsPair, workdir: Path, change: list[tuple[str, ...]],
            rounds: int = 6) -> int:
    """Send `rounds` rounds of frames at a steady rate in a thread while `change` runs;
    return the rounds sent."""
    sent: list[int] = []
    sender = threading.Thread(target=lambda: sent.append(pair.inject_ingress(
        frames(pair), workdir, repeat=rounds, rate=400)))
    sender.start()
    try:
        for step in change:
            if step[0] == "kill-9":
                pid = int((workdir / "run" / "t.pid").read_text())
                os.kill(pid, signal.SIGKILL)
            else:
                ncebpf(pair, workdir, Path(step[1]), *step[2:])
    finally:
        sender.join()
    assert sent and sent[0] == rounds * sum(PEERS.values())
    return rounds


@pytest.mark.parametrize("change", ["restart", "kill-9", "keep"])
def test_no_count_is_lost_while_the_daemon_changes_hands(pair: NetnsPair, workdir: Path,
                                                        bpffs: Path, change: str) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc", "--checkpoint", "1")
    b = str(bpffs)
    steps = {"restart": [("ncebpf", b, "restart", "--mode", "tc", "--checkpoint", "1")],
             "kill-9": [("kill-9",), ("ncebpf", b, "start", "--mode", "tc", "--checkpoint", "1")],
             "keep": [("ncebpf", b, "stop", "--keep"),
                      ("ncebpf", b, "start", "--mode", "tc", "--checkpoint", "1")]}[change]
    try:
        rounds = through(pair, workdir, steps)
        assert dumped(pair, workdir, bpffs) == {p: n * rounds for p, n in PEERS.items()}
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)
    assert not (bpffs / "ncebpf" / "t").exists()
    assert not (workdir / "state" / "t.checkpoint").exists()


def test_a_changed_filter_starts_a_new_data_set_without_a_detach(pair: NetnsPair,
                                                                 workdir: Path,
                                                                 bpffs: Path) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
    try:
        pair.inject_ingress(frames(pair), workdir)
        ncebpf(pair, workdir, bpffs, "restart", "--mode", "tc", "udp")
        log = (workdir / "state" / "t.log").read_text()
        assert log.count("starting a new data set") == 1
        assert "replaced ncebpf's in one step" in log
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == PEERS
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)


def test_after_a_reboot_the_table_resumes_and_says_what_was_lost(pair: NetnsPair,
                                                                 workdir: Path,
                                                                 bpffs: Path) -> None:
    """Maps gone, checkpoint there: simulated by `stop --keep`, then detach of the programs
    and removal of the pins by hand, as a reboot would."""
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
    try:
        pair.inject_ingress(frames(pair), workdir)
        ncebpf(pair, workdir, bpffs, "stop", "--keep")
        checkpoint = workdir / "state" / "t.checkpoint"
        saved = checkpoint.read_bytes()
        ncebpf(pair, workdir, bpffs, "detach", "--iface", pair.local_if)
        checkpoint.write_bytes(saved)  # detach ends the data set; a reboot would not
        ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
        log = (workdir / "state" / "t.log").read_text()
        assert "seconds of counts were lost" in log
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == {p: 2 * n for p, n in PEERS.items()}
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)


def test_where_pins_fail_it_counts_unpinned_and_says_so_once(pair: NetnsPair, workdir: Path,
                                                             bpffs: Path) -> None:
    """A bpf file system mounted read-only for ncebpf (as systemd's ProtectKernelTunables=
    makes /sys/fs/bpf): the daemon counts exactly, says in one line that it cannot pin and
    what that costs; `stop --keep` then detaches (nothing could read the maps later) and
    keeps the table's checkpoint, from which the next start goes on."""
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    run("mount", "--bind", str(bpffs), str(bpffs))
    run("mount", "-o", "remount,bind,ro", str(bpffs))
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
    try:
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == PEERS
        log = (workdir / "state" / "t.log").read_text()
        warned = [line for line in log.splitlines() if "cannot pin the counting maps" in line]
        assert len(warned) == 1, log
        assert "Read-only file system" in warned[0] and "ReadWritePaths=" in warned[0]
        assert not (bpffs / "ncebpf").exists()
        ncebpf(pair, workdir, bpffs, "stop", "--keep")
        assert "ncebpf" not in pair.ns(pair.local, "tc", "filter", "show", "dev", pair.local_if,
                                       "ingress").stdout
        assert (workdir / "state" / "t.checkpoint").exists()
        ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
        log = (workdir / "state" / "t.log").read_text()
        assert "not pinned, so no later run could read them: detaching" in log
        assert "from the checkpoint of" in log and "but the counting maps are not pinned" in log
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == {p: 2 * n for p, n in PEERS.items()}
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)
        run("umount", str(bpffs), check=False)  # the read-only bind; the fixture's mount stays
