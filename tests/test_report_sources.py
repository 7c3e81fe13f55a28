"""Dumps read back: JSON, ncebpf's and upstream's `.stats`, the coalescer's composite — as data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.config import Instance
from ncebpf.dump import DumpContext, json_document, render_json, render_perl
from ncebpf.errors import NcebpfError
from ncebpf.filter.frames import ip_frame
from ncebpf.report import perldata, sources
from ncebpf.report.model import DIRECTION_FIELDS, TOTAL_FIELDS, Snapshot
from ncebpf.report.sources import from_instance, parse_dump, read_dump
from tests.netns import DaemonProcess, NetnsPair

CONTEXT = DumpContext("n", "eth1", "xdp", filter="dst host 10.77.0.1", promiscuous=True,
                      match="GET /", nomatch="X\x01", payload=4, snaplen=80)
HOSTILE = ["it's", "back\\slash\\", "$(touch /tmp/ncebpf-pwned)",
           '@{[ system("touch /tmp/ncebpf-pwned") ]}', "two\nlines", "\\x{41}\\'",
           "'; system('touch /tmp/ncebpf-pwned'); '", "${\\ `id`}", "ünï ☺", "','"]


def sample_table() -> PeerTable:
    table = PeerTable(start=1000)
    table.add(peer_key("fd77::2"), 3, 330, 1001, 1010)
    table.add(peer_key("10.77.0.10"), 2, 200, 1002, 1003)
    table.add(peer_key("192.168.100.200"), 1, 60, 1004, 1004)
    table.add(peer_key("::ffff:10.77.0.3"), 1, 60, 1004, 1004)
    table.add(peer_key("10.77.0.9"), 1, 60, 1004, 1004)
    table.add(peer_key("10.77.0.9"), 5, 500, 1400, 1400)  # an update: R and W are fractions
    table.peers[peer_key("10.77.0.10")].N = ["host.example.com", "alias.example.com"]
    table.peers[peer_key("fd77::2")].N = HOSTILE
    table.totals = Totals(packets=13, bytes=1210, unparsed=4)
    table.others.peers, table.others.packets, table.others.bytes = 2, 7, 700
    return table


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def upstream_fields(snapshot: Snapshot) -> list[tuple[object, ...]]:
    """What a `.stats` file can say of each peer: B R W rounded to whole numbers."""
    return [(p.address, round(p.B), p.C, p.E, p.N, round(p.R), p.S, p.T, round(p.W))
            for p in snapshot.peers]


def one_line_error(path: Path) -> str:
    with pytest.raises(NcebpfError) as caught:
        read_dump(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


# -- round trips --------------------------------------------------------------------------

def test_json_and_stats_of_one_moment_read_back_the_same(tmp_path: Path) -> None:
    table = sample_table()
    document = json_document(table, CONTEXT, 2000)
    stats_text = render_perl(table, CONTEXT, 2000)
    from_json = read_dump(write(tmp_path / "n.json", render_json(document)))
    from_stats = read_dump(write(tmp_path / "n.stats", stats_text))

    assert from_json.header == from_stats.header
    assert stats_text == from_json.header + stats_text[len(from_json.header):]
    assert stats_text[len(from_json.header):].startswith("{\n  my $dump = {\n")
    assert [p.address for p in from_json.peers] == list(document["peers"]) == [
        "10.77.0.9", "10.77.0.10", "192.168.100.200", "::ffff:10.77.0.3", "fd77::2"]
    assert upstream_fields(from_json) == upstream_fields(from_stats)
    for peer in from_json.peers:
        fields = document["peers"][peer.address]
        assert (peer.B, peer.R, peer.W, peer.packets, peer.bytes) == (
            fields["B"], fields["R"], fields["W"], fields["packets"], fields["bytes"])
        assert (peer.in_packets, peer.in_bytes, peer.out_packets, peer.out_bytes) == (
            fields["in_packets"], fields["in_bytes"], fields["out_packets"], fields["out_bytes"])
        assert [p for p in from_stats.peers if p.address == peer.address][0].packets is None
        assert [p for p in from_stats.peers if p.address == peer.address][0].in_packets is None
    assert from_json.peers[-1].N == tuple(HOSTILE)
    assert {k: from_json.totals[k] for k in ("in_packets", "in_bytes", "out_packets",
                                            "out_bytes")} == {
        k: document["totals"][k] for k in ("in_packets", "in_bytes", "out_packets", "out_bytes")}
    for snapshot in (from_json, from_stats):
        assert (snapshot.start, snapshot.current, snapshot.users) == (1000, 2000, 5)
        assert (snapshot.hits_per_minute, snapshot.bytes_per_second) == (
            document["hits_per_minute"], document["bytes_per_second"])
        assert (snapshot.device, snapshot.promiscuous, snapshot.filter) == (
            "eth1", True, "dst host 10.77.0.1")
        assert (snapshot.payload, snapshot.snaplen) == (4, 80)
        assert snapshot.others == {"peers": 2, "packets": 7, "bytes": 700}
    assert (from_json.name, from_json.mode, from_json.match, from_json.nomatch) == (
        "n", "xdp", "GET /", "X\x01")
    # The .stats file has what its header says: lower-cased and escaped (spec §10.2).
    assert (from_stats.name, from_stats.mode, from_stats.match, from_stats.nomatch) == (
        None, None, "get /", "x\\x{1}")
    assert from_json.totals == {"packets": 13, "bytes": 1210, "filtered_out": 0, "unparsed": 4,
                                "unattributed": 0, "overflow": 0, "dropped": 0,
                                "in_packets": 13, "in_bytes": 1210, "out_packets": 0,
                                "out_bytes": 0}
    assert from_stats.totals == {} and from_json.unknown == {}
    assert (from_json.source, from_stats.source) == (str(tmp_path / "n.json"),
                                                      str(tmp_path / "n.stats"))


def test_a_dump_from_before_in_and_out_still_reads(tmp_path: Path) -> None:
    """JSON dumps written before issue 13 have no in/out: read, with None there."""
    document = json_document(sample_table(), CONTEXT, 2000)
    for record in document["peers"].values():
        for key in ("in_packets", "in_bytes", "out_packets", "out_bytes"):
            del record[key]
    for key in ("in_packets", "in_bytes", "out_packets", "out_bytes"):
        del document["totals"][key]
    snapshot = read_dump(write(tmp_path / "old.json", render_json(document)))
    assert all(p.in_packets is None and p.out_bytes is None for p in snapshot.peers)
    assert [p.packets for p in snapshot.peers] == [r["packets"]
                                                   for r in document["peers"].values()]
    assert "in_packets" not in snapshot.totals and snapshot.totals["packets"] == \
        document["totals"]["packets"]


def test_the_format_is_the_contents_not_the_name(tmp_path: Path) -> None:
    table = sample_table()
    as_stats = read_dump(write(tmp_path / "n.stats", render_json(json_document(
        table, CONTEXT, 2000))))
    as_json = read_dump(write(tmp_path / "n.json", render_perl(table, CONTEXT, 2000)))
    assert as_stats.mode == "xdp" and as_json.mode is None
    assert upstream_fields(as_stats) == upstream_fields(as_json)


def test_an_empty_table_and_no_others(tmp_path: Path) -> None:
    table = PeerTable(start=1000)
    context = DumpContext("n", "eth0", "tc")
    from_json = read_dump(write(tmp_path / "a", render_json(json_document(table, context, 1010))))
    from_stats = read_dump(write(tmp_path / "b", render_perl(table, context, 1010)))
    assert from_json.peers == from_stats.peers == ()
    assert from_json.header == from_stats.header and "others" not in from_stats.header
    assert from_stats.others == {} and from_json.others == {"peers": 0, "packets": 0, "bytes": 0}
    assert from_stats.match is None and from_stats.payload is None


def test_json_with_unknown_totals(tmp_path: Path) -> None:
    table = sample_table()
    table.totals = Totals(packets=13, bytes=1210,
                          unknown={"filtered_out": "the socket filter rejects frames unseen"})
    document = json_document(table, CONTEXT, 2000)
    assert document["totals"]["filtered_out"] is None
    snapshot = read_dump(write(tmp_path / "n.json", render_json(document)))
    assert list(snapshot.totals) == list(TOTAL_FIELDS) + list(DIRECTION_FIELDS)
    assert snapshot.totals["filtered_out"] is None and snapshot.totals["packets"] == 13
    assert snapshot.unknown == {"filtered_out": "the socket filter rejects frames unseen"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=4))
def test_any_names_round_trip_through_the_stats_file(names: list[str]) -> None:
    table = PeerTable(start=1000)
    table.add(peer_key("10.77.0.1"), 1, 60, 1001, 1001)
    table.add(peer_key("fd77::1"), 1, 60, 1001, 1001)
    table.peers[peer_key("10.77.0.1")].N = names
    table.peers[peer_key("fd77::1")].N = names[::-1]
    snapshot = parse_dump(render_perl(table, CONTEXT, 2000), "x")
    assert [p.N for p in snapshot.peers] == [tuple(names), tuple(names[::-1])]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text())
@example("eth\u2028#0", "host\x85 10.77.0.1\u2029{", "\xff\x00")
def test_any_header_values_read_back_the_same_header(device: str, filter_text: str,
                                                     match: str) -> None:
    table = sample_table()
    context = DumpContext("n", device, "tc", filter=filter_text, match=match)
    from_json = parse_dump(render_json(json_document(table, context, 2000)), "j")
    stats_text = render_perl(table, context, 2000)
    from_stats = parse_dump(stats_text, "s")
    assert from_json.header == from_stats.header == stats_text[:len(from_json.header)]
    assert upstream_fields(from_json) == upstream_fields(from_stats)


def test_perl_itself_reads_the_same_names(tmp_path: Path) -> None:
    """Real perl `do`es ncebpf's escaped file and gets the names ncebpf reads back."""
    table = sample_table()
    stats = write(tmp_path / "n.stats", render_perl(table, CONTEXT, 2000))
    perl = shutil.which("perl")
    assert perl, "perl is part of the test set-up (scripts/install-system-deps --test)"
    script = ("use JSON::PP; my $h = do $ARGV[0]; die \"eval: $@\" if $@; die 'undef' unless $h;"
              " print JSON::PP->new->canonical->encode({map { $_ => $h->{$_}{N} } keys %$h});")
    out = subprocess.run([perl, "-e", script, str(stats)], capture_output=True, text=True,
                         check=True)
    by_perl = json.loads(out.stdout)
    ours = {p.address: list(p.N) for p in read_dump(stats).peers}
    assert ours == by_perl and ours["fd77::2"] == HOSTILE
    assert not Path("/tmp/ncebpf-pwned").exists()


# -- upstream's files ---------------------------------------------------------------------

UPSTREAM = """
# Net::Connection::Sniffer version 0.36
# start:\t1145923212,\tMon Apr 24 17:00:12 2006
# current:\t1145923334,\tMon Apr 24 17:02:14 2006
# hits:\t\t3832 per minute
# bytes:\t5927 per second
# users:\t2
# device:\teth0\tnon-promiscuous
# bpf:\t\tdst host my.host.com
{
  my $dump = {
\t'69.3.95.131'\t=> {
\t\tB\t=> 240,
\t\tC\t=> 4,
\t\tE\t=> 1145760699,
\t\tN\t=> ['host.example.com',],
\t\tR\t=> 723,
\t\tS\t=> 1145757331,
\t\tT\t=> 1145790478,
\t\tW\t=> 43359,
\t},
\t'192.168.100.200' => {
\t\tB\t=> 0,
\t\tC\t=> 1,
\t\tE\t=> 1145760700,
\t\tN\t=> [],
\t\tR\t=> 0,
\t\tS\t=> 1145757331,
\t\tT\t=> 0,
\t\tW\t=> 0,
\t},
  };
}
"""


def test_an_upstream_file_as_spec_10_3_shows_it(tmp_path: Path) -> None:
    snapshot = read_dump(write(tmp_path / "up.stats", UPSTREAM))
    assert snapshot.header == UPSTREAM[:UPSTREAM.index("{")]
    assert snapshot.header.startswith("\n# Net::Connection::Sniffer version 0.36\n")
    assert (snapshot.start, snapshot.current, snapshot.hits_per_minute,
            snapshot.bytes_per_second, snapshot.users) == (1145923212, 1145923334, 3832, 5927,
                                                           2)
    assert (snapshot.device, snapshot.promiscuous, snapshot.filter) == (
        "eth0", False, "dst host my.host.com")
    assert upstream_fields(snapshot) == [
        ("69.3.95.131", 240, 4, 1145760699, ("host.example.com",), 723, 1145757331,
         1145790478, 43359),
        ("192.168.100.200", 0, 1, 1145760700, (), 0, 1145757331, 0, 0)]
    assert snapshot.totals == {} and snapshot.others == {} and snapshot.mode is None


def test_a_loosely_laid_out_file_reads_as_the_regular_one(tmp_path: Path) -> None:
    """Spaces for TABs, other key order, a comment: the general parser, same data."""
    loose = UPSTREAM.replace("\t", "  ").replace(
        "C  => 4,", "C => 4, # hits\n").replace("    B  => 240,\n", "").replace(
        "W  => 43359,", "W => 43359, B => '240',")
    assert "\t" not in loose
    regular, general = (read_dump(write(tmp_path / n, t)) for n, t in (("a", UPSTREAM),
                                                                       ("b", loose)))
    assert upstream_fields(general) == upstream_fields(regular)


COMPOSITE = UPSTREAM.split("{")[0] + UPSTREAM.split("{")[0].replace("hits:\t\t3832", "hits:\t\t5") \
    .replace("1145923212", "1145923000").replace("eth0", "eth9") + """
# grand total all hosts
# hits: \t3837 per minute
# bytes:\t11854 per second
my $VAR1 = {
          '10.77.0.1' => {
                           'S' => '1000',
                           'N' => [
                                    'x.example.com',
                                    'alias.example.net'
                                  ],
                           'W' => '43200',
                           'B' => '600',
                           'T' => 0,
                           'E' => '1000',
                           'R' => 180,
                           'C' => '5'
                         },
          '10.77.0.0' => {
                           'N' => [],
                           'B' => 1,
                           'C' => 1,
                           'E' => 2,
                           'R' => '1.5',
                           'S' => 1,
                           'T' => 1,
                           'W' => '2.5e1'
                         }
        };
"""


def test_the_coalescers_composite(tmp_path: Path) -> None:
    """Spec §11.8's merge example, as Data::Dumper writes it: quoted numbers, any order."""
    snapshot = read_dump(write(tmp_path / "composite.stats", COMPOSITE))
    assert snapshot.header == COMPOSITE[:COMPOSITE.index("my $VAR1")]
    assert [p.address for p in snapshot.peers] == ["10.77.0.0", "10.77.0.1"]
    assert upstream_fields(snapshot)[1] == ("10.77.0.1", 600, 5, 1000,
                                            ("x.example.com", "alias.example.net"), 180, 1000,
                                            0, 43200)
    assert (snapshot.peers[0].R, snapshot.peers[0].W) == (1.5, 25.0)
    # The grand total, the earliest start, the latest current, the first device.
    assert (snapshot.hits_per_minute, snapshot.bytes_per_second) == (3837, 11854)
    assert (snapshot.start, snapshot.current, snapshot.device) == (1145923000, 1145923334,
                                                                   "eth0")
    assert snapshot.users == 2


@pytest.mark.parametrize("indent, useqq", [(2, 0), (1, 0), (2, 1), (0, 1)])
def test_what_data_dumper_writes(tmp_path: Path, indent: int, useqq: int) -> None:
    """Real Data::Dumper output of ncebpf's own file, hostile names and all; Useqq=1
    writes double-quoted strings with escapes."""
    stats = write(tmp_path / "n.stats", render_perl(sample_table(), CONTEXT, 2000))
    composite = tmp_path / "composite.stats"
    script = (f"use Data::Dumper; $Data::Dumper::Indent = {indent}; "
              f"$Data::Dumper::Useqq = {useqq}; my $h = do $ARGV[0]; die \"eval: $@\" if $@; "
              "open(my $o, '>', $ARGV[1]) or die; "
              "print $o \"\\n# Net::Connection::Sniffer version 0.36\\n\", "
              "Data::Dumper->Dump([$h], ['VAR1']);")
    subprocess.run(["perl", "-e", script, str(stats), str(composite)], check=True)
    text = composite.read_text(errors="replace")
    assert "$VAR1 = {" in text and ('"\\$(touch' in text) == bool(useqq)
    assert upstream_fields(read_dump(composite)) == upstream_fields(read_dump(stats))


@pytest.mark.parametrize("layout", ["regular", "spaced", "dumper", "commented"])
def test_the_fast_readers_agree_with_the_general_parser(layout: str) -> None:
    """The regular and loose fast paths read what perldata reads, or leave the file to it."""
    text = {"regular": render_perl(sample_table(), CONTEXT, 2000),
            "spaced": UPSTREAM.replace("\t", "  "),
            "dumper": COMPOSITE,
            "commented": UPSTREAM.replace("C\t=> 4,", "C\t=> 4, # hits")}[layout]
    _, offset = sources.split_header(text)
    regular = sources._regular_peers(text, offset)
    loose = sources._loose_peers(text, offset, "x")
    general = sources._general_peers(text, offset, "x")
    assert [regular is not None, loose is not None] == {
        "regular": [True, True], "spaced": [False, True], "dumper": [False, True],
        "commented": [False, False]}[layout]
    # Each in the file's order: parse_stats puts them in numeric order (sources._checked).
    assert regular in (None, general) and loose in (None, general)


def test_a_header_only_file_is_a_dump_of_no_peers(tmp_path: Path) -> None:
    """Upstream's reader loops forever on it (spec §10.4)."""
    header = UPSTREAM[:UPSTREAM.index("{")]
    snapshot = read_dump(write(tmp_path / "h.stats", header))
    assert snapshot.peers == () and snapshot.header == header and snapshot.users == 2


# -- hostile and broken files ---------------------------------------------------------------

def test_an_upstream_name_with_a_quote_is_an_error_on_its_line(tmp_path: Path) -> None:
    broken = UPSTREAM.replace("['host.example.com',]", "['it's.example.com',]")
    message = one_line_error(write(tmp_path / "q.stats", broken))
    assert "line 16:" in message


@pytest.mark.parametrize("names", [
    "[@{[ system(\"touch MARKER\") ]}]",
    "[\"@{[ system('touch MARKER') ]}\"]",
    "[\"${\\ system('touch MARKER')}\"]",
    "[`touch MARKER`]",
    "[system('touch MARKER')]",
    "[do { system('touch MARKER') }]",
])
def test_a_file_that_would_run_code_gives_an_error_and_runs_nothing(tmp_path: Path,
                                                                    names: str) -> None:
    def hostile(marker: Path) -> str:
        return UPSTREAM.replace("['host.example.com',]", names.replace("MARKER", str(marker)))

    ours, perls = tmp_path / "ours", tmp_path / "perls"
    message = one_line_error(write(tmp_path / "h.stats", hostile(ours)))
    assert "line 16:" in message
    assert not ours.exists()
    # The same file, evaluated as upstream's readers do, runs the command.
    subprocess.run(["perl", "-e", "do $ARGV[0]", str(write(tmp_path / "p.stats",
                                                           hostile(perls)))], check=True)
    assert perls.exists()


def test_strings_that_look_like_code_are_only_strings(tmp_path: Path) -> None:
    text = UPSTREAM.replace("['host.example.com',]",
                            "['$(touch x)', '@{[ system(\"id\") ]}', \"plain\", \"\\x{263a}\\$\"]")
    text = text.replace("# bpf:\t\tdst host my.host.com", "# bpf:\t\thost \\x{a}`id`")
    snapshot = read_dump(write(tmp_path / "s.stats", text))
    assert snapshot.peers[0].N == ("$(touch x)", '@{[ system("id") ]}', "plain", "\u263a$")
    assert snapshot.filter == "host \\x{a}`id`"


@pytest.mark.parametrize("text, expected", [
    ("hello, world\n", "line 1: expected '{ my $dump = {' or '$VAR1 = {', found 'hello'"),
    ("\n# a comment\n\nfoo = bar\n", "line 4: expected '{ my $dump"),
    ("\x00\x01binary", "line 1: unexpected '\\x00\\x01binary'"),
    ("\n# just a comment\n", "only comments, not a .stats dump"),
    ('{"version": 1, "peers": {"10.77.0.1": {"B"', "not valid JSON (truncated?): line 1"),
    ('{"version": 2}', "schema version 2"),
    ('{"a": 1}', "not an ncebpf dump"),
    ("[1, 2]", "not a .stats dump: its value is not a hash of peers"),
    ("$VAR1 = { '10.77.0.1' => { 'B' => 1 } };", "peer '10.77.0.1' has no C E N R S T W"),
    ("$VAR1 = " + "[" * 40 + "]" * 40 + ";", "line 1: nested deeper than 32 levels"),
    ("$VAR1 = { 'a' => \"x\\qy\" };", "the escape \\q"),
    ("$VAR1 = { 'a' => 'open };", "line 1: a string opened with ' is never closed"),
    ("$VAR1 = {};\nsystem('id');\n", "line 2: expected the end of the file"),
    ("$VAR1 = { '10.77.0.1' => { B => 1, C => 1e999, E => 1, N => [], R => 1, S => 1, T => 1, "
     "W => 1 } };", "peer '10.77.0.1': C is inf, not a finite number"),
    ("$VAR1 = { '10.77.0.1' => { B => 1, C => 1.5, E => 1, N => [], R => 1, S => 1, T => 1, "
     "W => 1 } };", "peer '10.77.0.1': C is 1.5, not a whole number"),
    ('{"version": 1, "start": 1, "current": 1, "hits_per_minute": 0, "bytes_per_second": 0, '
     '"users": 1, "device": "d", "promiscuous": false, "filter": "", "peers": {"10.77.0.1": '
     '{"B": 1, "C": 1, "E": 1, "N": [], "R": NaN, "S": 1, "T": 1, "W": 1e999}}}',
     "peer '10.77.0.1': R is nan: not a finite number"),
    ('{"version": 1, "start": 1, "current": 1, "hits_per_minute": 0, "bytes_per_second": 0, '
     '"users": 1, "device": "d", "promiscuous": false, "filter": "", "peers": {"10.77.0.1": '
     '{"B": 1, "C": 1, "E": 1, "N": "abc", "R": 1, "S": 1, "T": 1, "W": 1}}}',
     "peer '10.77.0.1' has a field of the wrong type"),
    ('{"version": 1, "start": 1, "current": 1, "hits_per_minute": 0, "bytes_per_second": 0, '
     '"users": 1, "device": "d", "promiscuous": false, "filter": "", "peers": {"10.77.0.1": '
     '{"B": 1}}}', "peer '10.77.0.1' is not a peer record"),
    ('{"version": 1, "start": "1"}', 'no "current" field'),
])
def test_not_a_dump(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in one_line_error(write(tmp_path / "x", text))


def test_truncated_files(tmp_path: Path) -> None:
    table = sample_table()
    stats = render_perl(table, CONTEXT, 2000)
    cut = stats[:stats.index("\t\tR\t=> ", 900)]
    message = one_line_error(write(tmp_path / "t.stats", cut))
    assert f"line {cut.count(chr(10)) + 1}: expected" in message
    document = render_json(json_document(table, CONTEXT, 2000))
    assert "not valid JSON (truncated?)" in one_line_error(write(tmp_path / "t.json",
                                                                 document[:-20]))


def test_missing_empty_and_a_directory(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(tmp_path / "missing.json")
    assert "empty file" in one_line_error(write(tmp_path / "empty", ""))
    assert "empty file" in one_line_error(write(tmp_path / "blank", " \n\n"))
    assert "is a directory" in one_line_error(tmp_path)


def test_perldata_reads_the_subset() -> None:
    assert perldata.parse("{ my $dump = { a => [1, -2.5e3, 'x\\'y\\\\z\\n', undef,], }; }") \
        == {"a": [1, -2500.0, "x'y\\z\\n", None]}
    assert perldata.parse('$VAR1 = [ "tab\\there", "\\x41\\101" ];') == ["tab\there", "AA"]
    assert perldata.parse("  { 7 => 'seven', '' => {} }  ") == {"7": "seven", "": {}}


@pytest.mark.privileged
def test_a_fresh_dump_of_a_running_instance(silent_pair: NetnsPair, workdir: Path) -> None:
    """Exact counts: neither stack has IPv6, so no MLD report from :: joins the frames sent."""
    pair = silent_pair
    v4 = ip_frame("10.77.1.1", pair.local_v4, "udp", 100)
    v6 = ip_frame("fd77:1::1", pair.local_v6, "udp", 200)
    daemon = DaemonProcess(pair, workdir, name="src")
    try:
        assert pair.inject_ingress([v4] * 7 + [v6] * 17, workdir) == 24
        snapshot = from_instance(Instance("src", workdir / "state", workdir / "run"), 10)
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert {p.address: (p.packets, p.bytes) for p in snapshot.peers} == {
        "10.77.1.1": (7, 7 * len(v4)), "fd77:1::1": (17, 17 * len(v6))}
    assert (snapshot.source, snapshot.name, snapshot.device) == ("instance src", "src",
                                                                  pair.local_if)
    assert snapshot.totals["packets"] == 24 and snapshot.users == 2
    assert snapshot.header.startswith("\n# Net::Connection::Sniffer version 0.36\n")


VALID_STATS = render_perl(sample_table(), CONTEXT, 2000)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_damage_gives_a_snapshot_or_one_line_error(data: st.DataObject) -> None:
    """Cut, insert, replace anywhere in a dump (or JSON): never another exception."""
    base = data.draw(st.sampled_from([VALID_STATS, UPSTREAM, COMPOSITE, render_json(
        json_document(sample_table(), CONTEXT, 2000))]))
    start = data.draw(st.integers(0, len(base)))
    end = data.draw(st.integers(start, min(len(base), start + 40)))
    insert = data.draw(st.text(alphabet="'\\\"{}[],;=>$@#\n\t x0-.e", max_size=12))
    try:
        snapshot = parse_dump(base[:start] + insert + base[end:], "damaged")
    except NcebpfError as err:
        assert "\n" not in str(err) and str(err).startswith("damaged: ")
    else:
        assert isinstance(snapshot, Snapshot)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_gives_a_snapshot_or_one_line_error(text: str) -> None:
    try:
        parse_dump(text, "any")
    except NcebpfError as err:
        assert "\n" not in str(err)


def test_fifos_and_devices_are_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.stats"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(NcebpfError, match="not a regular file"):
            read_dump(path)


def test_a_file_larger_than_any_dump_is_refused_unread(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.json"
    with sparse.open("wb") as f:
        f.truncate(sources.MAX_DUMP_BYTES + 1)
    with pytest.raises(NcebpfError, match="larger than any dump"):
        read_dump(sparse)


def json_dump(peers: str) -> str:
    return ('{"version": 1, "start": 1, "current": 2, "hits_per_minute": 0, '
            '"bytes_per_second": 0, "users": 1, "device": "d", "promiscuous": false, '
            f'"filter": "", "peers": {{{peers}}}}}')


def record(**fields: object) -> str:
    values = {"B": 1, "C": 1, "E": 1000, "N": [], "R": 1, "S": 1000, "T": 0, "W": 1,
              **fields}
    return json.dumps(values)


@pytest.mark.parametrize("address", ["foo", "10.77.0.300", "010.077.000.001", "10.77.0.1/24",
                                     "fe80::1%eth0", " 10.77.0.1", "", "\x00\x1b[2J"])
def test_a_key_that_is_not_an_address_is_named(address: str) -> None:
    with pytest.raises(NcebpfError) as refused:
        parse_dump(json_dump(f"{json.dumps(address)}: {record()}"), "d.json")
    message = str(refused.value)
    assert message.startswith("d.json: peer ") and "is not an IPv4 or IPv6 address" in message
    assert message.isprintable()


@pytest.mark.parametrize(("fields", "expected"), [
    ({"E": 10**20}, "E is 100000000000000000000: a time before 1970 or after 9999"),
    ({"W": -43359}, "W is -43359: negative"),
    ({"W": 1e300}, "W is 1e+300: beyond any real figure"),
    ({"packets": -5}, "packets is -5: negative"),
])
def test_figures_no_report_can_print_are_refused(fields: dict[str, object],
                                                 expected: str) -> None:
    with pytest.raises(NcebpfError, match=re.escape(expected)):
        parse_dump(json_dump(f'"10.77.0.1": {record(**fields)}'), "d.json")


def test_addresses_are_canonical_ordered_and_once_each_the_last_as_perl_keeps() -> None:
    fields = "B => 1, C => 1, E => 5, N => [], S => 1, T => 0, W => 1"
    body = ("{\n  my $dump = {\n"
            f"\t'FD77:0::1' => {{ R => 1, {fields} }},\n"
            f"\t'10.77.0.9' => {{ R => 723, {fields} }},\n"
            f"\t'10.77.0.9' => {{ R => 100, {fields} }},\n"
            "  };\n}\n")
    snapshot = parse_dump(UPSTREAM.split("{")[0] + body, "dup.stats")
    assert [(p.address, p.R) for p in snapshot.peers] == [("10.77.0.9", 100.0),
                                                          ("fd77::1", 1.0)]
