"""Peer names from a real DNS server (NSD), through the running daemon."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ip_frame
from tests.dns_server import NsdServer, label, relative
from tests.netns import DaemonProcess, NetnsPair
from tests.test_dump import perl_read

pytestmark = pytest.mark.privileged

V4_ZONE, V6_ZONE = "77.10.in-addr.arpa", "7.7.d.f.ip6.arpa"
HOSTILE = "it's \"x\" \\ @{[system('id')]}"
SILENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5399))
print("ready", flush=True)
while True:
    s.recv(512)  # and never answer
"""


def zones(short_ttl_name: str = "first.example.test.") -> dict[str, list[str]]:
    return {
        V4_ZONE: [
            f"{relative('10.77.5.1', V4_ZONE)} IN PTR one.example.test.",
            f"{relative('10.77.5.1', V4_ZONE)} IN PTR uno.example.test.",
            f"{relative('10.77.5.1', V4_ZONE)} IN PTR 1.5.77.10.in-addr.arpa.",
            f"{relative('10.77.5.2', V4_ZONE)} IN PTR two.example.test.",
            f"{relative('10.77.5.3', V4_ZONE)} IN PTR {label(HOSTILE)}.example.test.",
            f"{relative('10.77.5.4', V4_ZONE)} IN PTR 4.5.77.10.in-addr.arpa.",
            f"{relative('10.77.5.5', V4_ZONE)} 5 IN PTR {short_ttl_name}",
            # 10.77.5.6 is not there: NXDOMAIN, with the SOA
        ],
        V6_ZONE: [f"{relative('fd77:0:0:5::1', V6_ZONE)} IN PTR six.example.test."],
    }


def wait_for_names(daemon: DaemonProcess, peers: list[str], timeout: float = 30
                   ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dump = daemon.dump()
        if all(dump["peers"].get(p, {}).get("T", 0) for p in peers):
            return dump
        if time.monotonic() > deadline:
            raise AssertionError(f"no names yet: {dump['peers']}")
        time.sleep(0.3)


def test_names_ttls_nxdomain_servfail_ipv6_and_a_hostile_name(pair: NetnsPair,
                                                              workdir: Path) -> None:
    peers = ["10.77.5.1", "10.77.5.2", "10.77.5.3", "10.77.5.4", "10.77.5.6", "10.77.9.1",
             "fd77:0:0:5::1"]
    with NsdServer(pair, workdir, zones(), broken=("9.77.10.in-addr.arpa",)):
        daemon = DaemonProcess(pair, workdir, "--resolver", pair.remote_v4, "--interval", "0.2",
                               resolve=True)
        try:
            before = int(time.time())
            frames = [ip_frame(p, pair.local_v6 if ":" in p else pair.local_v4, "udp", 10)
                      for p in peers]
            pair.inject_ingress(frames, workdir)
            dump = wait_for_names(daemon, peers)
            after = int(time.time())
            stats = perl_read(workdir / "state" / "t.stats")
        finally:
            assert daemon.stop() == 0
    got = {p: dump["peers"][p] for p in peers}

    def ttl_of(peer: str, ttl: int) -> bool:
        return before + ttl <= got[peer]["T"] <= after + ttl

    assert sorted(got["10.77.5.1"]["N"]) == ["one.example.test", "uno.example.test"]
    assert ttl_of("10.77.5.1", 300)
    assert got["10.77.5.2"]["N"] == ["two.example.test"]
    assert got["10.77.5.4"]["N"] == ["4.5.77.10.in-addr.arpa"]  # all reverse names: kept
    assert got["10.77.5.6"]["N"] == [":ns1.example.test"] and ttl_of("10.77.5.6", 45)
    assert got["10.77.9.1"]["N"] == [] and ttl_of("10.77.9.1", 86400)  # SERVFAIL
    assert got["fd77:0:0:5::1"]["N"] == ["six.example.test"]
    (hostile,) = got["10.77.5.3"]["N"]
    assert hostile.isprintable() and hostile.endswith(".example.test")
    assert stats["10.77.5.3"]["N"] == [hostile]  # type: ignore[index]


def test_ttl_expiry_asks_again(pair: NetnsPair, workdir: Path) -> None:
    with NsdServer(pair, workdir, zones("first.example.test.")) as server:
        daemon = DaemonProcess(pair, workdir, "--resolver", pair.remote_v4, "--interval", "0.2",
                               resolve=True)
        try:
            pair.inject_ingress([ip_frame("10.77.5.5", pair.local_v4, "udp", 10)], workdir)
            first = wait_for_names(daemon, ["10.77.5.5"])["peers"]["10.77.5.5"]
            server.records = zones("second.example.test.")
            server.reload()
            deadline = time.monotonic() + 20
            while daemon.dump()["peers"]["10.77.5.5"]["N"] != ["second.example.test"]:
                assert time.monotonic() < deadline, "no second lookup after the TTL"
                time.sleep(0.5)
            second = daemon.dump()["peers"]["10.77.5.5"]
        finally:
            assert daemon.stop() == 0
    assert first["N"] == ["first.example.test"]
    assert second["T"] > first["T"]


def test_failover_from_a_server_that_drops_queries(pair: NetnsPair, workdir: Path) -> None:
    with NsdServer(pair, workdir, zones()), \
            pair.popen(pair.remote, sys.executable, "-c", SILENT, pair.remote_v4) as silent:
        assert silent.stdout is not None and silent.stdout.readline().strip() == "ready"
        daemon = DaemonProcess(pair, workdir, "--resolver", f"{pair.remote_v4}:5399",
                               "--resolver", pair.remote_v4, "--interval", "0.2", resolve=True)
        try:
            pair.inject_ingress([ip_frame("10.77.5.2", pair.local_v4, "udp", 10)], workdir)
            dump = wait_for_names(daemon, ["10.77.5.2"])
        finally:
            assert daemon.stop() == 0
            silent.kill()
    assert dump["peers"]["10.77.5.2"]["N"] == ["two.example.test"]


def query_times(capture: Path) -> list[float]:
    data = capture.read_bytes()
    times, offset = [], 24
    while offset + 16 <= len(data):
        seconds, micros, caplen = struct.unpack_from("<III", data, offset)
        times.append(seconds + micros / 1e6)
        offset += 16 + caplen
    return times


def test_rate_cap_holds_under_10000_new_peers(pair: NetnsPair, workdir: Path) -> None:
    rate = 50
    flood = [ip_frame(f"10.77.{100 + i // 250}.{1 + i % 250}", pair.local_v4, "udp", 1)
             for i in range(10_000)]
    capture = workdir / "dns.pcap"
    with NsdServer(pair, workdir, zones()):
        tcpdump = pair.popen(pair.remote, "tcpdump", "--immediate-mode", "-i", pair.remote_if,
                             "-w", str(capture), "udp dst port 53")
        try:
            assert tcpdump.stderr is not None and "listening" in tcpdump.stderr.readline()
            daemon = DaemonProcess(pair, workdir, "--resolver", pair.remote_v4,
                                   "--dns-rate", str(rate), "--interval", "0.2", resolve=True)
            try:
                pair.inject_ingress(flood, workdir)
                time.sleep(4)
                dump = daemon.dump()
            finally:
                assert daemon.stop() == 0
        finally:
            tcpdump.terminate()
            tcpdump.communicate(timeout=10)
    assert len(dump["peers"]) >= 10_000
    times = query_times(capture)
    assert len(times) >= 2 * rate, "the resolver should have been asking all along"
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    burst = min(rate, 32)
    assert busiest <= rate + burst, f"{busiest} queries in one second"
    spread = times[-1] - times[0]
    assert len(times) <= rate * spread + burst + rate  # the long-run rate holds too
