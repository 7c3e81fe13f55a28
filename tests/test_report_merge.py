"""Several dumps as one report (report/merge.py, report/fleet.py): the merge rules, the
per-host header, JSON and HTML, ssh sources as parsed and asked. Pure; no root."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ncebpf.errors import UsageError
from ncebpf.report import render
from ncebpf.report.aggregate import aggregate
from ncebpf.report.fleet import (
    SshOptions,
    SshSource,
    parse_source,
    read_hosts_file,
    same_source,
    ssh_command,
)
from ncebpf.report.merge import VARIES, merge
from ncebpf.report.model import TOTAL_FIELDS, Options, Peer, Snapshot


def snapshot(source: str, peers: list[Peer], **fields: object) -> Snapshot:
    packets = sum(peer.packets or 0 for peer in peers)
    nbytes = sum(peer.bytes or 0 for peer in peers)
    made = Snapshot(source=source, start=1000, current=2000, hits_per_minute=20,
                    bytes_per_second=168, users=len(peers), device="eth0", promiscuous=False,
                    filter="udp", header=f"\n# header of {source}\n", peers=tuple(peers),
                    name=source, mode="tc",
                    totals={field: 0 for field in TOTAL_FIELDS} | {"packets": packets,
                                                                  "bytes": nbytes})
    return replace(made, **fields)  # type: ignore[arg-type]


def peer(address: str, **fields: object) -> Peer:
    base = Peer(address=address, B=0.0, C=0, E=1000, N=(), R=0.0, S=1000, T=0, W=0.0,
                packets=1, bytes=100)
    return base._replace(**fields)


def test_upstream_s_example_with_e_the_latest() -> None:
    """Spec §11.8's merge example; E is the maximum (upstream copied a C instead)."""
    a = snapshot("a", [peer("10.77.1.1", R=120.0, W=36000.0, B=500.0, C=3, E=1000,
                            N=("x.example.com",))])
    b = snapshot("b", [peer("10.77.1.1", R=60.0, W=7200.0, B=100.0, C=2, E=1200,
                            N=("x.example.com", "alias.example.net"))],
                 hits_per_minute=5, bytes_per_second=40)
    merged = merge([a, b])
    (x,) = merged.peers
    assert (x.R, x.W, x.B, x.C, x.E) == (180.0, 43200.0, 600.0, 5, 1200)
    assert x.N == ("x.example.com", "alias.example.net")
    assert (merged.hits_per_minute, merged.bytes_per_second) == (25, 208)
    group, = aggregate(merged, Options(by="peer")).groups
    assert (round(group.R / 60), round(group.W / 3600)) == (3, 12)  # as upstream shows it


def test_names_are_compared_as_strings_not_patterns() -> None:
    a = snapshot("a", [peer("10.77.1.1", N=("xa.bxcom",))])
    b = snapshot("b", [peer("10.77.1.1", N=("a.b.com", "xa.bxcom"))])
    assert merge([a, b]).peers[0].N == ("xa.bxcom", "a.b.com")


def test_exact_counts_sum_and_s_is_the_earliest() -> None:
    a = snapshot("a", [peer("10.77.1.1", packets=3, bytes=300, in_packets=2, in_bytes=200,
                            out_packets=1, out_bytes=100, S=900, T=5)])
    b = snapshot("b", [peer("10.77.1.1", packets=4, bytes=400, in_packets=4, in_bytes=400,
                            out_packets=0, out_bytes=0, S=1100, T=9),
                       peer("10.77.2.1")])
    merged = merge([a, b])
    first = merged.peers[0]
    assert (first.packets, first.bytes, first.in_packets, first.in_bytes, first.out_packets,
            first.out_bytes, first.S, first.T) == (7, 700, 6, 600, 1, 100, 900, 9)
    assert [p.address for p in merged.peers] == ["10.77.1.1", "10.77.2.1"]
    assert merged.users == 2
    assert merged.totals["packets"] == 8 and merged.totals["bytes"] == 800


def test_a_count_one_dump_lacks_is_unknown_not_smaller() -> None:
    a = snapshot("a", [peer("10.77.1.1", packets=3)])
    stats = snapshot("b.stats", [peer("10.77.1.1", packets=None, bytes=None)], totals={})
    merged = merge([a, stats])
    assert merged.peers[0].packets is None and merged.peers[0].bytes is None
    assert merged.totals == {}


def test_an_unknown_total_says_whose_and_why() -> None:
    a = snapshot("a", [peer("10.77.1.1")])
    b = snapshot("b", [peer("10.77.1.1")])
    b = replace(b, totals=b.totals | {"dropped": None}, unknown={"dropped": "pcap mode"})
    merged = merge([a, b])
    assert merged.totals["dropped"] is None and merged.unknown == {"dropped": "b: pcap mode"}
    assert merged.totals["packets"] == 2


def test_peers_match_by_address_value() -> None:
    a = snapshot("a", [peer("fd77::1")])
    b = snapshot("b", [peer("fd77:0:0::1")])
    assert len(merge([a, b]).peers) == 1


def test_header_names_each_host_failures_and_the_grand_total() -> None:
    a = snapshot("ssh://a", [peer("10.77.1.1", packets=5, bytes=500)])
    b = snapshot("ssh://b", [peer("10.77.1.1"), peer("10.77.2.1")], mode="xdp",
                 filter="tcp")
    merged = merge([a, b], [("ssh://c", "ssh: Permission denied (publickey).")])
    header = merged.header
    assert "\n# host:\tssh://a\tmode tc, 1 peer, 5 packets, 500 bytes\n# header of ssh://a\n" \
        in header
    assert "\n# host:\tssh://b\tmode xdp, 2 peers, 2 packets, 200 bytes\n" in header
    assert "\n# host:\tssh://c\tFAILED: ssh: Permission denied (publickey).\n" in header
    assert header.endswith("\n# grand total all hosts\n# hits: \t40 per minute\n"
                           "# bytes:\t336 per second\n# users:\t2\n# partial:\t1 of 3 hosts "
                           "gave no dump: their peers are missing\n")
    assert (merged.mode, merged.filter, merged.device, merged.partial) == \
        (VARIES, VARIES, "eth0", True)
    assert merged.source == "3 hosts, 1 without a dump"
    assert [part.source for part in merged.parts] == ["ssh://a", "ssh://b"]
    assert all(part.peers == () for part in merged.parts)
    text = render(aggregate(merged, Options()), "text")
    assert text.startswith(header)


def test_json_and_html_show_hosts_totals_and_partial() -> None:
    a = snapshot("ssh://a", [peer("10.77.1.1", packets=5, bytes=500)])
    merged = merge([a], [("ssh://<b>", "no route")])
    report = aggregate(merged, Options())
    summary = json.loads(render(report, "json"))["dump"]
    assert summary["partial"] is True
    assert summary["failures"] == [{"source": "ssh://<b>", "error": "no route"}]
    assert [(h["source"], h["totals"]["packets"], h["users"]) for h in summary["hosts"]] == \
        [("ssh://a", 5, 1)]
    page = render(report, "html")
    assert 'id="partial"' in page and "1 of 2 sources gave no dump" in page
    assert page.index('id="partial"') < page.index('id="dump"')  # at the top, not below
    assert "<title>ncebpf report — 2 hosts, 1 without a dump (partial)</title>" in page
    assert '<tr data-host="ssh://a">' in page
    assert 'data-host-total="packets" data-value="5"' in page
    assert "ssh://&lt;b&gt;" in page and "<b>" not in page.split('id="hosts"')[1]
    single = json.loads(render(aggregate(a, Options()), "json"))["dump"]
    assert (single["hosts"], single["failures"], single["partial"]) == ([], [], False)
    assert 'id="hosts"' not in render(aggregate(a, Options()), "html")


@pytest.mark.parametrize(("text", "expected"), [
    ("ssh://gw1", SshSource("ssh://gw1", "gw1")),
    ("ssh://ops@gw1.example.net:2222/uplink",
     SshSource("ssh://ops@gw1.example.net:2222/uplink", "gw1.example.net", "ops", 2222,
               "uplink")),
    ("ssh://[fd77::1]:22/t", SshSource("ssh://[fd77::1]:22/t", "fd77::1", None, 22, "t")),
    ("SSH://gw1", SshSource("SSH://gw1", "gw1")),
    ("ssh://ops%40example.org@gw1", SshSource("ssh://ops%40example.org@gw1", "gw1",
                                              "ops@example.org")),
])
def test_ssh_sources(text: str, expected: SshSource) -> None:
    assert parse_source(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("ssh://-oProxyCommand=sh", "no host name"),
    ("ssh://", "no host name"),
    ("ssh://gw1:99999", "not an ssh source"),
    ("ssh://u:secret@gw1", "a password never goes in the URL"),
    ("ssh://gw1:0", "port 0 is no port"),
    ("ssh://[fe80::1%25eth0]", "a zone"),
    ("ssh:gw1", "write ssh://"),
    ("ssh://gw1/a/b", "not an instance name"),
    ("ssh://gw1/x?y=1", "no ?query"),
])
def test_ssh_sources_refused(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("?", r"\?")):
        parse_source(text)


def test_a_path_is_a_file_source() -> None:
    assert parse_source("/var/lib/ncebpf/x.json") == Path("/var/lib/ncebpf/x.json")


def test_ssh_argv_never_prompts_and_quotes_the_dump() -> None:
    source = SshSource("ssh://ops@gw1:2222/up", "gw1", "ops", 2222, "up")
    argv = ssh_command(source, SshOptions(config=Path("/etc/fleet.conf"),
                                          remote_ncebpf="sudo -n ncebpf"), 4.5)
    assert argv == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=4", "-o",
                    "LogLevel=ERROR", "-F", "/etc/fleet.conf", "-p", "2222", "-l", "ops", "--",
                    "gw1", "sudo -n ncebpf dump --format json --output - --timeout 4.5 "
                    "--name up"]
    assert ssh_command(SshSource("ssh://gw1", "gw1"), SshOptions(), 60)[-1] == \
        "ncebpf dump --format json --output - --timeout 60"


def test_hosts_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "fleet"
    hosts.write_bytes("\ufeff# gateways\r\nssh://gw1\n\n  ssh://gw2/up  # the uplink\n"
                      "  # old: ssh://gw3\ndumps/a.json\n/abs/b.json\n".encode())
    assert read_hosts_file(hosts) == ["ssh://gw1", "ssh://gw2/up", str(tmp_path / "dumps/a.json"),
                                      "/abs/b.json"]
    hosts.write_bytes(b"ssh://gw1\n# caf\xe9\n")
    with pytest.raises(UsageError, match="line 2 is not UTF-8"):
        read_hosts_file(hosts)


@pytest.mark.parametrize(("first", "second"), [
    ("ssh://gw1", "ssh://gw1:22/ncebpf"),
    ("ssh://[fd77::1]/x", "ssh://[FD77:0::1]:22/x"),
    ("a.json", "./a.json"),
])
def test_one_source_written_two_ways_is_one_source(first: str, second: str) -> None:
    assert same_source(parse_source(first)) == same_source(parse_source(second))
    assert same_source(parse_source("ssh://gw1")) != same_source(parse_source("ssh://op@gw1"))
