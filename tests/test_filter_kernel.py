"""Filters on live traffic and `ncebpf explain`, with root."""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest

from ncebpf.filter.frames import ETH_P_ARP, arp_request, ethernet, ip_frame
from ncebpf.filter.pcap import compile_filter
from ncebpf.filter.translate import Translation
from ncebpf.kernel.check import check_filter
from tests.netns import NCEBPF, TESTS, DaemonProcess, NetnsPair, run
from tests.tcp_stream import tcp_stream
from tests.test_kernel_counts import assert_peers, expected_counts

pytestmark = pytest.mark.privileged

LIVE_FILTER = "udp port 53 or (tcp and dst net 10.77.7.0/24) or icmp6 or host 10.77.9.9"


def read_pcap(path: Path) -> list[bytes]:
    data = path.read_bytes()
    frames, offset = [], 24  # global header
    while offset + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, offset + 8)[0]
        frames.append(data[offset + 16:offset + 16 + caplen])
        offset += 16 + caplen
    return frames


def live_mix(pair: NetnsPair) -> tuple[list[bytes], list[bytes]]:
    local4, local6 = pair.local_v4, pair.local_v6
    ingress = [ip_frame("10.77.5.1", local4, "udp", 20, dport=53)] * 7
    ingress += [ip_frame("10.77.5.2", local4, "udp", 20, dport=5353)] * 5
    ingress += [ip_frame("10.77.5.3", "10.77.7.1", "tcp", 10)] * 11
    ingress += [ip_frame("10.77.5.4", local4, "tcp", 10)] * 3
    ingress += [ip_frame("fd77:5::1", local6, "icmp", 8)] * 13
    ingress += [ip_frame("fd77:5::2", local6, "udp", 8, dport=53, vlans=(10,))] * 2
    ingress += [ip_frame("10.77.9.9", local4, "udp", 30)] * 4  # the filter's host ...
    ingress += [ethernet(arp_request(), ETH_P_ARP)] * 3
    egress = [ip_frame(local4, "10.77.6.1", "udp", 40, sport=53)] * 5
    egress += [ip_frame(local4, "10.77.7.9", "tcp", 0)] * 17
    egress += [ip_frame(local4, "10.77.6.2", "tcp", 0)] * 2
    egress += [ip_frame(local6, "fd77:6::1", "icmp", 0)] * 3
    egress += [ip_frame("10.77.9.9", "10.77.6.3", "udp", 12)] * 6  # ... is local: peer is dst
    return ingress, egress


@pytest.mark.parametrize("expression", [LIVE_FILTER, "udp port 53 and dst host 10.77.0.1"])
def test_counts_equal_tcpdump_with_the_same_filter(silent_pair: NetnsPair, workdir: Path,
                                                   expression: str) -> None:
    pair = silent_pair
    capture = workdir / "all.pcap"
    # -s 0 would make each ring slot 256 KiB: a 2 MiB ring then holds 8 frames
    # and tcpdump drops the rest of a burst. Our frames are all under 512 bytes.
    tcpdump = pair.popen(pair.local, "tcpdump", "--immediate-mode", "-i", pair.local_if, "-U",
                         "-B", "8192", "-s", "512", "-w",
                         str(capture))
    try:
        assert tcpdump.stderr is not None
        assert "listening on" in tcpdump.stderr.readline()
        # auto counts ingress at TC, where the stack has moved the VLAN tag into metadata:
        # the filter still sees the frame as on the wire, as tcpdump -r does.
        daemon = DaemonProcess(pair, workdir, expression)
        try:
            ingress, egress = live_mix(pair)
            pair.inject_ingress(ingress, workdir)
            pair.inject_egress(egress, workdir)
            dump = daemon.dump()
        finally:
            assert daemon.stop() == 0, daemon.stderr
        time.sleep(0.5)
    finally:
        tcpdump.terminate()
        _, tcpdump_said = tcpdump.communicate(timeout=10)
    filtered = workdir / "filtered.pcap"
    run("tcpdump", "-r", str(capture), "-w", str(filtered), expression)
    seen = read_pcap(capture)
    matched = read_pcap(filtered)
    # No IPv6 address is local here: IPv6 frames count under their source.
    expected, unparsed = expected_counts(matched, {pair.local_v4, "10.77.9.9"})
    assert "\n0 packets dropped by kernel" in tcpdump_said, tcpdump_said
    assert_peers(dump, expected)
    assert {p for p in dump["peers"]} == set(expected)
    assert dump["filter"] == expression
    assert unparsed == 0 and dump["totals"]["unparsed"] == 0  # ARP does not pass this filter
    assert seen == ingress + egress  # silent stacks: the test's frames and nothing else
    assert dump["totals"]["filtered_out"] == len(seen) - len(matched)


def test_explain_accepted_filter() -> None:
    out = run(*NCEBPF, "explain", "udp", "port", "53", "and", "dst", "host", "10.77.0.1")
    assert "classic BPF from libpcap, 16 instructions:" in out.stdout
    assert "(000) ldh [12]" in out.stdout
    assert "static __always_inline __u32 ncebpf_filter(" in out.stdout
    assert "kernel: accepted; the filter's test program is" in out.stdout
    assert "self-check: kernel and libpcap agree on all" in out.stdout
    assert "(0 match)" not in out.stdout


def test_explain_untranslatable_filter() -> None:
    out = run(*NCEBPF, "explain", "protochain 6", check=False)
    assert out.returncode == 2
    assert "jumps backwards" in out.stdout and "(000)" in out.stdout


def test_explain_without_privileges_shows_the_translation() -> None:
    out = run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all", *NCEBPF, "explain", "tcp[13] = 2", check=False)
    assert out.returncode == 0, out.stderr
    assert "generated C" in out.stdout and "kernel: not checked" in out.stdout


def test_verifier_rejection_is_reported_with_its_log(privileged: None) -> None:
    unchecked = Translation((TESTS / "bpf" / "unchecked_filter.h").read_text(), "ncebpf_filter",
                            64, 1)
    check = check_filter(unchecked, compile_filter("ip"), [bytes(64)])
    assert not check.accepted
    assert "invalid access to packet" in check.log


def test_filter_syntax_error_exits_2(workdir: Path) -> None:
    out = subprocess.run([*NCEBPF, "attach", "--iface", "lo", "--statedir", str(workdir),
                          "--piddir", str(workdir), "udp", "prt", "53"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == ("Error: bad filter 'udp prt 53': "
                                  "can't parse filter expression: syntax error")


def test_payload_filter_sees_fragments_at_tc_egress(pair: NetnsPair, workdir: Path) -> None:
    """TSO puts TCP payload in page fragments beyond the linear data: the program
    must pull it in before the filter reads it. Every data segment (and only
    those) starts with a zero byte, and the sender reports how many it sent."""
    first_payload_byte_zero = "tcp and tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0"
    daemon = DaemonProcess(pair, workdir, "--direction", "egress", first_payload_byte_zero)
    try:
        stats = tcp_stream(pair)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert stats.skbs < stats.segs_out  # GSO happened, so fragments were in play
    assert dump["peers"][pair.remote_v4]["packets"] == stats.data_segs_out
    assert dump["totals"]["filtered_out"] >= stats.segs_out - stats.data_segs_out
