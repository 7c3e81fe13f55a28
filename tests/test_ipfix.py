"""--ipfix on a counting instance, read by real collectors that the test starts in the test
namespace: nfdump's nfcapd (its files read back with `nfdump -r`) and pmacct's nfacctd (its
memory table read with `pmacct -s`), nfcapd repeating every datagram to nfacctd. Per peer and
direction, both show the bytes and packets of ncebpf's JSON dump exactly."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import TIME_SCALE, DaemonProcess, NetnsPair

pytestmark = pytest.mark.privileged

NFCAPD_PORT, NFACCTD_PORT = 4739, 4740  # the namespace's loopback: the namespace is new
LOCAL = {"10.77.0.1", "fd77::1"}


@contextlib.contextmanager
def collector(pair: NetnsPair, workdir: Path, name: str, *argv: str,
              stop: signal.Signals = signal.SIGTERM) -> Iterator[Path]:
    """A collector running in the local namespace, its output in workdir/<name>.log; stop
    sent (killed if need be) on the way out."""
    log = workdir / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", pair.local, *argv], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0 * TIME_SCALE)
        assert proc.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
        yield log
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peer_of(source: str, destination: str) -> tuple[str, str]:
    """(peer, direction) of a record: the side that is not ours."""
    return (destination, "out") if source in LOCAL else (source, "in")


def nfdump_counts(flows: Path) -> Counter[tuple[str, str, str]]:
    """(peer, direction, packets|bytes) -> sum over the records nfcapd stored."""
    out = subprocess.run(["nfdump", "-R", str(flows), "-q", "-N", "-o",
                          "fmt:%sa,%da,%pkt,%byt"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in out.splitlines():
        source, destination, packets, nbytes = (f.strip() for f in line.split(","))
        peer, direction = peer_of(source, destination)
        counts[peer, direction, "packets"] += int(packets)
        counts[peer, direction, "bytes"] += int(nbytes)
    return counts


def pmacct_counts(pair: NetnsPair, pipe: Path) -> Counter[tuple[str, str, str]]:
    """The same from nfacctd's memory table (`pmacct -s -O json`: a record per line)."""
    out = pair.ns(pair.local, "pmacct", "-p", str(pipe), "-s", "-O", "json").stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        peer, direction = peer_of(entry["ip_src"], entry["ip_dst"])
        counts[peer, direction, "packets"] += int(entry["packets"])
        counts[peer, direction, "bytes"] += int(entry["bytes"])
    return counts


def dump_counts(peers: dict[str, dict[str, int]]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for address, peer in peers.items():
        for direction in ("in", "out"):
            for what in ("packets", "bytes"):
                if peer[f"{direction}_{what}"]:
                    counts[address, direction, what] = peer[f"{direction}_{what}"]
    return counts


def test_nfdump_and_nfacctd_show_the_dump_s_counts(pair: NetnsPair, workdir: Path) -> None:
    flows, pipe = workdir / "flows", workdir / "nfacctd.pipe"
    flows.mkdir()
    config = workdir / "nfacctd.conf"
    config.write_text("daemonize: false\n"
                      f"nfacctd_ip: 127.0.0.1\nnfacctd_port: {NFACCTD_PORT}\n"
                      "aggregate: src_host, dst_host\nplugins: memory\n"
                      f"imt_path: {pipe}\n")
    # SIGINT: pmacct's daemons take SIGTERM without exiting.
    with collector(pair, workdir, "nfacctd", "nfacctd", "-f", str(config),
                   stop=signal.SIGINT), \
            collector(pair, workdir, "nfcapd", "nfcapd", "-w", str(flows), "-b", "127.0.0.1",
                      "-p", str(NFCAPD_PORT), "-R", f"127.0.0.1/{NFACCTD_PORT}"):
        daemon = DaemonProcess(pair, workdir, "--filter", "udp", "--mode", "tc",
                               "--interval", "0.5", "--ipfix", f"127.0.0.1:{NFCAPD_PORT}",
                               "--ipfix-domain", "77")
        try:
            frames = [ip_frame(src, dst, "udp", size)
                      for src, dst, size, count in (
                          ("10.77.3.1", pair.local_v4, 40, 7), ("10.77.3.2", pair.local_v4, 90, 3),
                          ("fd77::9", pair.local_v6, 60, 2))
                      for _ in range(count)]
            pair.inject_ingress(frames, workdir)
            pair.inject_egress([ip_frame(pair.local_v4, "10.77.3.1", "udp", 100)] * 4 +
                               [ip_frame(pair.local_v6, "fd77::9", "udp", 10)] * 5, workdir)
            time.sleep(1.5 * TIME_SCALE)  # drained and sent
        finally:
            assert daemon.stop() == 0
        dump = json.loads((workdir / "state" / "t.json").read_text())
        expected = dump_counts(dump["peers"])
        deadline = time.monotonic() + 20 * TIME_SCALE
        while (accounted := pmacct_counts(pair, pipe)) != expected:
            assert time.monotonic() < deadline, (accounted, expected)
            time.sleep(0.5)
    assert nfdump_counts(flows) == expected
    assert expected["10.77.3.1", "in", "packets"] == 7
    assert expected["10.77.3.1", "out", "packets"] == 4
    assert expected["fd77::9", "out", "packets"] == 5
    assert "Observation domain 77" in (workdir / "nfcapd.log").read_text()
