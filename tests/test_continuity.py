"""No count lost through `restart`, `kill -9` + `start`, `stop --keep` + `start`, a new
data set, and a simulated reboot (issue 13, items 1 and 2): real daemons, real traffic
at a steady rate while the daemon changes hands, exact counts per peer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
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


@pytest.mark.parametrize(("before", "after"), [("tc", "xdp"), ("xdp", "tc")])
def test_a_restart_in_another_mode_leaves_no_program_on_the_old_hook(
        silent_pair: NetnsPair, workdir: Path, bpffs: Path, before: str, after: str) -> None:
    """`restart --mode xdp` of a TC run (and back): the new ingress program sits on the other
    hook, so the old one must go, or both count every arriving frame into the same pinned
    maps (and the old one outlives `stop`). Frames before and after the restart counted
    once each; after `stop` no ncebpf program is left on either hook."""
    pair = silent_pair
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    ncebpf(pair, workdir, bpffs, "start", "--mode", before)
    try:
        pair.inject_ingress(frames(pair), workdir)
        ncebpf(pair, workdir, bpffs, "restart", "--mode", after)
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == {p: 2 * n for p, n in PEERS.items()}
        log = (workdir / "state" / "t.log").read_text()
        old = "TC ingress filter" if before == "tc" else "XDP program id"
        told = [line for line in log.splitlines() if "an earlier run of another mode" in line]
        assert len(told) == 1 and old in told[0], log
        assert ("ncebpf" in pair.ns(pair.local, "tc", "filter", "show", "dev", pair.local_if,
                                    "ingress").stdout) == (after == "tc")
        assert bool(pair.xdp_attached()) == (after == "xdp")
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)
    assert not pair.xdp_attached()
    for hook in ("ingress", "egress"):
        assert "ncebpf" not in pair.ns(pair.local, "tc", "filter", "show", "dev",
                                       pair.local_if, hook).stdout


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


def test_bpffs_is_mounted_only_at_sys_fs_bpf(workdir: Path, bpffs: Path) -> None:
    """--bpffs naming a directory inside a bpf file system pins there, and one on another
    file system is refused (PinError: the daemon then counts unpinned and says so): never a
    new bpffs mounted over it, which would hide the directory's contents and, under `ip netns
    exec`, vanish with the daemon and its pins."""
    from ncebpf.kernel.pins import PinError, ensure_bpffs

    inside, plain = bpffs / "sub", workdir / "plain"
    inside.mkdir()
    plain.mkdir()
    (plain / "kept").write_text("still visible")
    try:
        ensure_bpffs(inside)
        with pytest.raises(PinError, match="is not on a bpf file system") as refused:
            ensure_bpffs(plain)
        assert not refused.value.mounted
        assert not os.path.ismount(inside) and not os.path.ismount(plain)
        assert (plain / "kept").read_text() == "still visible"
    finally:
        for path in (inside, plain):
            if os.path.ismount(path):
                run("umount", str(path), check=False)


@pytest.mark.parametrize("elsewhere", ["another interface", "pcap"])
def test_a_start_elsewhere_detaches_the_programs_kept_on_the_old_interface(
        silent_pair: NetnsPair, workdir: Path, bpffs: Path, elsewhere: str) -> None:
    """`stop --keep`, frames counted by the kept programs, then `start` on a second veth
    (same data set: their counts are carried) or in pcap mode (a new data set: dropped):
    either way the kept programs leave the old interface, and the log says so in one line
    with the packets concerned."""
    pair = silent_pair
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    other, other_peer = pair.local_if[:-1] + "c", pair.remote_if[:-1] + "d"
    run("ip", "link", "add", "name", other, "netns", pair.local, "type", "veth", "peer",
        "name", other_peer, "netns", pair.remote)
    for ns, ifname, address in ((pair.local, other, "10.77.2.1/24"),
                                (pair.remote, other_peer, "10.77.2.2/24")):
        pair.ns(ns, "ip", "link", "set", ifname, "addrgenmode", "none")
        pair.ns(ns, "ip", "addr", "add", address, "dev", ifname)
        pair.ns(ns, "ip", "link", "set", ifname, "up")
    names = ["--name", "t", "--statedir", str(workdir / "state"), "--piddir",
             str(workdir / "run"), "--bpffs", str(bpffs)]
    ncebpf(pair, workdir, bpffs, "start", "--mode", "tc")
    try:
        pair.inject_ingress(frames(pair), workdir)
        assert dumped(pair, workdir, bpffs) == PEERS
        ncebpf(pair, workdir, bpffs, "stop", "--keep")
        pair.inject_ingress(frames(pair), workdir)  # counted by the kept programs
        if elsewhere == "pcap":
            ncebpf(pair, workdir, bpffs, "start", "--mode", "pcap")
        else:
            pair.ns(pair.local, *NCEBPF, "start", "--no-resolve", "--interval", "0.2",
                    "--mode", "tc", "--iface", other, *names)
        log = (workdir / "state" / "t.log").read_text()
        told = [line for line in log.splitlines() if "that an earlier run left counting" in line]
        assert len(told) == 1, log
        n = sum(PEERS.values())
        assert f"left counting on {pair.local_if}" in told[0]
        assert f"the {n} packets they counted since the last checkpoint" in told[0]
        for hook in ("ingress", "egress"):
            assert "ncebpf" not in pair.ns(pair.local, "tc", "filter", "show", "dev",
                                           pair.local_if, hook).stdout
        if elsewhere == "pcap":
            assert "are dropped" in told[0] and not (bpffs / "ncebpf").exists()
            pair.inject_ingress(frames(pair), workdir)  # the capture counts these
            assert dumped(pair, workdir, bpffs) == PEERS
        else:
            assert "are carried into this run" in told[0]
            assert dumped(pair, workdir, bpffs) == {p: 2 * k for p, k in PEERS.items()}
            pair.inject_ingress(frames(pair), workdir)  # the old interface: nobody counts
            pair.send(pair.remote, other_peer, [ip_frame(peer, "10.77.2.1", "udp", 60)
                                                for peer, k in PEERS.items()
                                                for _ in range(k)], workdir,
                      resend_dropped=True)
            assert dumped(pair, workdir, bpffs) == {p: 3 * k for p, k in PEERS.items()}
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)


def test_a_kill_after_an_eviction_resumes_with_everything_accounted(
        silent_pair: NetnsPair, workdir: Path, bpffs: Path) -> None:
    """--max-peers 1000 and two waves of 1 500 sources, the second after the first fell idle:
    a drain evicts, checkpointing first (the only checkpoint: --checkpoint 3600, no dump).
    kill -9 after it, start: the checkpoint's rows being evicted that the map no longer has
    are retired into `others`, and peers, others and totals add up to the frames sent."""
    from ncebpf.checkpoint import load
    from tests.test_survival import spoofed

    pair = silent_pair
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    small = ("--mode", "tc", "--max-peers", "1000", "--checkpoint", "3600")
    ncebpf(pair, workdir, bpffs, "start", *small)
    try:
        sent = pair.inject_ingress(spoofed(pair, 1500, 20), workdir)
        time.sleep(11.5)  # idle >= 10 s: evictable once the map is 90 % full
        sent += pair.inject_ingress(spoofed(pair, 1500, 40), workdir)
        path = workdir / "state" / "t.checkpoint"
        deadline = time.monotonic() + 30
        while not path.exists():
            assert time.monotonic() < deadline, "no drain evicted"
            time.sleep(0.1)
        # Until the evictions settle (each drain's deletes come after its checkpoint).
        written = 0
        while written != path.stat().st_mtime_ns:
            written = path.stat().st_mtime_ns
            time.sleep(2)
        os.kill(int((workdir / "run" / "t.pid").read_text()), signal.SIGKILL)
        loaded = load(path)
        assert loaded is not None and len(loaded[0].evicting) > 0
        retired = loaded[0].others.peers + len(loaded[0].evicting)
        ncebpf(pair, workdir, bpffs, "start", *small)
        dump = json.loads(ncebpf(pair, workdir, bpffs, "dump", "--format", "json").stdout)
    finally:
        ncebpf(pair, workdir, bpffs, "stop", check=False)
    totals, others = dump["totals"], dump["others"]
    assert dump["users"] == len(dump["peers"]) <= 1000
    # Retired: those before the checkpoint, and those it names as being evicted (the map
    # was down to 75 % after that drain: the new run evicts nothing of its own).
    assert others["peers"] == retired
    listed = sum(p["packets"] for p in dump["peers"].values())
    assert listed + others["packets"] == totals["packets"]
    assert totals["packets"] + totals["overflow"] + totals["unparsed"] == sent
