"""Net::Connection::Sniffer's defects (spec §15), each with the test that shows it fixed.

 1 IPv4 only: test_kernel_counts (IPv6 peers, both directions), test_config (IPv6 hosts).
 2 fixed Ethernet/IPv4 layout: test_kernel_counts (802.1Q, QinQ), the filter differential.
 3 IP options and non-first fragments dropped: test_kernel_counts (options); here.
 4 frames shorter than snaplen dropped: here.
 5, 6 nomatch and NUL payload bugs: test_payload, test_payload_kernel, test_payload_parity
   (frame-start offsets and ASCII-only case folding are kept on purpose).
 7 one reference host, first address only: here; test_config (interface choice).
 8 "hits" are packets: the dumps name packets and bytes as such.
 9, 10 rate semantics and the meaning of E: kept on purpose, the upstream contract
   (test_accounting reproduces the spec's worked examples).
 11 purge stops after an empty pass: test_accounting.
 12 stale records live two days: test_accounting (exactly one day survives).
 13 HUP turns a pending TERM into a reset: test_upstream_daemon (TERM with HUP).
 14 final dump left in .stats.tmp: test_upstream_daemon (TERM with HUP).
 15 `allowed` never enforced: test_upstream_daemon (UDP listener).
 16 loose `dump` match, cancelled dumps: test_listener, test_upstream_daemon.
 17 512-byte overflow, half files, 0-byte dumps: here; test_dump.
 18 unescaped names can execute: test_dump (hostile names and filter strings).
 19 DNS weaknesses: test_resolve (IDs, ports, arpa suffix, TTL 0, negative TTLs),
   test_resolve_kernel (several servers, failover, a server that drops queries, rate cap).
 20 exit codes, stop, restart, setsid, relative paths, pid reuse: test_upstream_daemon; here.
 21 a typo in a usage message: click writes the usage errors now.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ncebpf.accounting import PeerTable, peer_key
from ncebpf.dump import DumpContext, render_perl
from ncebpf.filter import prepare
from ncebpf.filter.frames import ETH_P_IP, IPPROTO_UDP, ethernet, ipv4, udp
from ncebpf.filter.host import resolve
from ncebpf.lifecycle import is_ncebpf_process, read_pid
from tests.netns import NCEBPF, DaemonProcess, NetnsPair
from tests.test_dump import perl_read


def test_7_every_address_of_the_first_host_is_local() -> None:
    addresses = resolve("localhost")
    assert len(addresses) >= 1
    assert prepare("host localhost and udp").local_hosts == tuple(addresses)


def test_17_long_strings_and_many_names_make_a_whole_file(tmp_path: Path) -> None:
    table = PeerTable(start=1000)
    table.add(peer_key("10.77.0.2"), 1, 60, 1000, 1000)
    table.peers[peer_key("10.77.0.2")].N = [f"name-{i}.example.com" for i in range(300)]
    stats = tmp_path / "n.stats"
    stats.write_text(render_perl(table, DumpContext("n", "eth0", "xdp",
                                                    filter=" or ".join(["udp"] * 500)), 2000))
    peer = perl_read(stats)["10.77.0.2"]
    assert isinstance(peer, dict) and len(peer["N"]) == 300


@pytest.mark.privileged
def test_3_and_4_fragments_and_short_frames_are_counted(pair: NetnsPair, workdir: Path) -> None:
    """Non-first fragments count at their own length; snaplen no longer drops short frames."""
    first = ethernet(ipv4("10.77.3.8", pair.local_v4, IPPROTO_UDP, udp(bytes(20)),
                          fragment=0x2000), ETH_P_IP)
    later = ethernet(ipv4("10.77.3.8", pair.local_v4, IPPROTO_UDP, bytes(30), fragment=3),
                     ETH_P_IP)
    daemon = DaemonProcess(pair, workdir, "--snaplen", "1500")
    try:
        pair.inject_ingress([first] * 2 + [later] * 3, workdir)
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0
    assert dump["peers"]["10.77.3.8"]["packets"] == 5
    assert dump["peers"]["10.77.3.8"]["bytes"] == 2 * len(first) + 3 * len(later)
    assert dump["snaplen"] == 1500


@pytest.mark.privileged
def test_20_own_session_and_a_reused_pid_is_not_ours(pair: NetnsPair, workdir: Path) -> None:
    args = ["--name", "bg", "--statedir", str(workdir), "--piddir", str(workdir)]
    (workdir / "bg.pid").write_text("1\n")  # pid 1 lives, but it is not ncebpf
    status = pair.ns(pair.local, *NCEBPF, "status", *args, check=False)
    assert status.returncode == 3
    started = pair.ns(pair.local, *NCEBPF, "start", "--iface", pair.local_if, "--no-resolve",
                      *args)
    pid = read_pid(workdir / "bg.pid")
    assert pid is not None and is_ncebpf_process(pid), started.stderr
    sid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    my_sid = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[3])
    assert sid != my_sid  # setsid(): no controlling terminal shared with whoever started it
    assert pair.ns(pair.local, *NCEBPF, "stop", *args).returncode == 0
    assert json.loads((workdir / "bg.json").read_text())["name"] == "bg"
