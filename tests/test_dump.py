"""JSON and Perl dumps; the Perl one read back by real perl."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf import dump
from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.dump import (
    DumpContext,
    ctime,
    escape_match,
    json_document,
    render_json,
    render_perl,
    write_atomically,
)

TOP_LEVEL = ["version", "name", "start", "current", "hits_per_minute", "bytes_per_second",
             "users", "device", "promiscuous", "filter", "mode", "match", "nomatch", "payload",
             "snaplen", "totals", "others", "peers"]
CONTEXT = DumpContext("n", "eth1", "xdp", filter="dst host 10.77.0.1")
HOSTILE = ["it's", "back\\slash\\", "@{[ system('touch /tmp/ncebpf-pwned') ]}",
           "two\nlines", "'; system('touch /tmp/ncebpf-pwned'); '", "${\\ `id`}"]


def sample_table() -> PeerTable:
    table = PeerTable(start=1000)
    table.add(peer_key("fd77::2"), 3, 330, 1001, 1010)
    table.add(peer_key("10.77.0.10"), 2, 200, 1002, 1003)
    table.add(peer_key("192.168.100.200"), 1, 60, 1004, 1004)
    table.add(peer_key("10.77.0.9"), 1, 60, 1004, 1004)
    table.add(peer_key("10.77.0.9"), 5, 500, 1400, 1400)  # an update: R and W are fractions
    table.peers[peer_key("10.77.0.10")].N = ["host.example.com", "alias.example.com"]
    table.totals = Totals(packets=12, bytes=1150, unparsed=4)
    return table


def test_json_document_follows_schema_version_1() -> None:
    doc = json_document(sample_table(), CONTEXT, now=2000.9)
    assert list(doc) == TOP_LEVEL
    assert doc["version"] == 1 and doc["start"] == 1000 and doc["current"] == 2000
    assert doc["users"] == 4
    assert doc["totals"] == {"packets": 12, "bytes": 1150, "in_packets": 12, "in_bytes": 1150,
                             "out_packets": 0, "out_bytes": 0, "filtered_out": 0, "unparsed": 4,
                             "unattributed": 0, "overflow": 0, "dropped": 0}
    assert list(doc["peers"]) == ["10.77.0.9", "10.77.0.10", "192.168.100.200", "fd77::2"]
    peer = doc["peers"]["fd77::2"]
    assert list(peer) == ["B", "C", "E", "N", "R", "S", "T", "W", "packets", "bytes",
                          "in_packets", "in_bytes", "out_packets", "out_bytes"]
    assert (peer["packets"], peer["bytes"], peer["E"], peer["S"]) == (3, 330, 1001, 1000)
    assert (peer["in_packets"], peer["in_bytes"], peer["out_packets"], peer["out_bytes"]) == \
        (3, 330, 0, 0)
    assert doc["peers"]["10.77.0.9"]["R"] > 0


def test_in_and_out_split_packets_and_bytes_and_the_totals() -> None:
    """Issue 13 item 3: in = the peer sent it, out = sent to the peer; both add up to
    packets/bytes, which with B and C count both ways."""
    table = PeerTable(start=1000)
    table.add(peer_key("10.77.0.2"), 3, 300, 1001, 1001, out_packets=5, out_bytes=700)
    table.add(peer_key("10.77.0.2"), 0, 0, 1002, 1002, out_packets=2, out_bytes=80)
    table.totals = Totals(packets=10, bytes=1080, out_packets=7, out_bytes=780)
    doc = json_document(table, CONTEXT, now=2000)
    peer = doc["peers"]["10.77.0.2"]
    assert (peer["in_packets"], peer["in_bytes"], peer["out_packets"], peer["out_bytes"]) == \
        (3, 300, 7, 780)
    assert (peer["packets"], peer["bytes"], peer["C"], peer["B"]) == (10, 1080, 10, 1080)
    totals = doc["totals"]
    assert (totals["in_packets"], totals["in_bytes"], totals["out_packets"],
            totals["out_bytes"]) == (3, 300, 7, 780)
    assert "out_packets" not in render_perl(table, CONTEXT, 2000)


def test_a_snapshot_dumps_the_moment_it_was_taken() -> None:
    """Issue 13 item 4: a dump written from a snapshot is the table of that instant,
    whatever drains, names, purges and resets do to the table meanwhile."""
    table = sample_table()
    expected_json = render_json(json_document(table, CONTEXT, 2000))
    expected_perl = render_perl(table, CONTEXT, 2000)
    snapshot = table.snapshot()
    table.add(peer_key("10.77.0.9"), 7, 700, 1500, 1500)
    table.add(peer_key("10.77.0.77"), 1, 60, 1500, 1500)
    table.peers[peer_key("fd77::2")].N = ["later.example.com"]
    table.peers[peer_key("10.77.0.10")].N = []
    table.totals = Totals(packets=99, bytes=9999)
    assert table.retire([peer_key("192.168.100.200")]) == 1
    assert render_json(json_document(snapshot, CONTEXT, 2000)) == expected_json
    assert render_perl(snapshot, CONTEXT, 2000) == expected_perl
    table.reset(3000)
    assert render_json(json_document(snapshot, CONTEXT, 2000)) == expected_json
    assert len(snapshot) == 4 and json_document(table, CONTEXT, 3000)["peers"] == {}


def test_the_loops_cheap_snapshot_is_in_row_order_and_sorts_into_the_same_dump() -> None:
    """The loop copies rows as they lie (snapshot_unordered); the dump's thread sorts them.
    Names follow their peers through the sort."""
    table = sample_table()
    table.peers[peer_key("fd77::2")].N = ["six.example.com"]
    unordered = table.snapshot_unordered()
    assert not unordered.ordered
    assert unordered.keys.tolist() == [peer_key(a) for a in (  # as they were added
        "fd77::2", "10.77.0.10", "192.168.100.200", "10.77.0.9")]
    assert unordered.names == {0: ["six.example.com"],
                               1: ["host.example.com", "alias.example.com"]}
    ordered = unordered.in_key_order()
    assert ordered.ordered and ordered.in_key_order() is ordered
    assert ordered.names == {1: ["host.example.com", "alias.example.com"],
                             3: ["six.example.com"]}
    assert render_json(json_document(unordered, CONTEXT, 2000)) == \
        render_json(json_document(table, CONTEXT, 2000))
    assert render_perl(unordered, CONTEXT, 2000) == render_perl(table, CONTEXT, 2000)


def test_integers_stay_integers() -> None:
    text = render_json(json_document(sample_table(), CONTEXT, 2000.0))
    for peer in json.loads(text)["peers"].values():
        assert all(isinstance(peer[k], int) for k in ("C", "E", "S", "T", "packets", "bytes",
                                                       "in_packets", "in_bytes", "out_packets",
                                                       "out_bytes"))


def test_perl_layout_is_upstreams_byte_for_byte() -> None:
    table = PeerTable(start=1145757331)
    table.add(peer_key("69.3.95.131"), 4, 240, 1145760699, 1145760699)
    record = table.peers[peer_key("69.3.95.131")]
    record.N, record.T, record.R, record.W = ["host.example.com"], 1145790478, 722.6, 43359.4
    text = render_perl(table, DumpContext("x", "eth0", "xdp", filter="dst host my.host.com"),
                       1145923334)
    assert text.split("\n")[8:] == [
        "# bpf:\t\tdst host my.host.com",
        "{",
        "  my $dump = {",
        "\t'69.3.95.131'\t=> {",
        "\t\tB\t=> 240,",
        "\t\tC\t=> 4,",
        "\t\tE\t=> 1145760699,",
        "\t\tN\t=> ['host.example.com',],",
        "\t\tR\t=> 723,",
        "\t\tS\t=> 1145757331,",
        "\t\tT\t=> 1145790478,",
        "\t\tW\t=> 43359,",
        "\t},",
        "  };",
        "}",
        "",
    ]
    assert text.split("\n")[:8] == [
        "",
        "# Net::Connection::Sniffer version 0.36",
        f"# start:\t1145757331,\t{ctime(1145757331)}",
        f"# current:\t1145923334,\t{ctime(1145923334)}",
        "# hits:\t\t0 per minute",
        "# bytes:\t0 per second",
        "# users:\t1",
        "# device:\teth0\tnon-promiscuous",
    ]


def test_perl_separator_rule_and_match_header() -> None:
    context = DumpContext("x", "eth0", "xdp", match="\nSomeDomain\x03com", nomatch="x\x7fy",
                          payload=54, snaplen=90, promiscuous=True)
    text = render_perl(sample_table(), context, 2000)
    assert "\t'192.168.100.200' => {" in text  # longer than 13 characters: one space
    assert "\t'10.77.0.10'\t=> {" in text
    assert "# device:\teth0\tpromiscuous\n" in text
    assert "# fragment:\t54 - 90\n# contains:\t\\x{a}somedomain\\x{3}com\n" \
           "# excludes:\tx\\x{7f}y\n" in text


def test_escape_match_follows_upstream() -> None:
    assert escape_match("\x01a\x7f\xa7\xa8\xfe\xff") == "\\x{1}a\\x{7f}\\x{a7}\xa8\xfe\\x{ff}"


def test_ctime_pads_the_day_with_a_space() -> None:
    assert len(ctime(1145923212)) == 24


def perl_read(path: Path) -> dict[str, object]:
    """What an upstream reader gets: `do` the file, as JSON."""
    perl = shutil.which("perl")
    assert perl, "perl is part of the test set-up"
    script = "use JSON::PP; my $h = do $ARGV[0]; die \"eval: $@\" if $@; die 'undef' unless $h;" \
             " print JSON::PP->new->canonical->encode($h);"
    out = subprocess.run([perl, "-e", script, str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_perl_reads_back_every_value_of_the_json_dump(tmp_path: Path) -> None:
    table = sample_table()
    table.peers[peer_key("fd77::2")].N = HOSTILE
    stats = tmp_path / "n.stats"
    stats.write_text(render_perl(table, CONTEXT, 2000))
    from_perl = perl_read(stats)
    from_json = json_document(table, CONTEXT, 2000)["peers"]
    assert set(from_perl) == set(from_json)
    for address, fields in from_json.items():
        got = from_perl[address]
        assert isinstance(got, dict)
        for name in ("C", "E", "N", "S", "T"):
            assert got[name] == fields[name], (address, name)
        for name in ("B", "R", "W"):
            assert int(got[name]) == int(f"{fields[name]:.0f}"), (address, name)
    assert not Path("/tmp/ncebpf-pwned").exists()


@pytest.mark.parametrize("filter_text", ["host 1.2.3.4\nsystem('touch /tmp/ncebpf-pwned');",
                                         "x\r}; system('id'); {"])
def test_a_hostile_filter_string_stays_in_its_comment(tmp_path: Path, filter_text: str) -> None:
    stats = tmp_path / "n.stats"
    stats.write_text(render_perl(sample_table(), DumpContext("n", "eth1", "xdp",
                                                             filter=filter_text), 2000))
    assert len(perl_read(stats)) == 4
    assert not Path("/tmp/ncebpf-pwned").exists()


def test_an_empty_table_is_a_readable_empty_dump(tmp_path: Path) -> None:
    """Upstream wrote a 0-byte file for an empty table (§15.17)."""
    stats = tmp_path / "n.stats"
    stats.write_text(render_perl(PeerTable(start=1000), CONTEXT, 2000))
    assert perl_read(stats) == {}


def test_atomic_write_replaces_and_leaves_no_scratch(tmp_path: Path) -> None:
    target = tmp_path / "n.json"
    target.write_text("old")
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]


@pytest.mark.parametrize("per_piece", [1, 2, 4, 5])
def test_dumps_stream_in_pieces_that_make_one_document(monkeypatch: pytest.MonkeyPatch,
                                                       per_piece: int) -> None:
    """A dump is written piece by piece (issue 9.2); any piece size gives the same text."""
    table = sample_table()
    whole_json = render_json(json_document(table, CONTEXT, 2000))
    whole_perl = render_perl(table, CONTEXT, 2000)
    monkeypatch.setattr(dump, "PEERS_PER_PIECE", per_piece)
    json_pieces = list(dump.json_pieces(table, CONTEXT, 2000))
    assert json.loads("".join(t for t, _ in json_pieces)) == json.loads(whole_json)
    assert [done for _, done in json_pieces][-1] == 4
    assert len(json_pieces) == 2 + 4 // per_piece
    assert "".join(t for t, _ in dump.perl_pieces(table, CONTEXT, 2000)) == whole_perl


def test_an_empty_table_streams_to_valid_json() -> None:
    text = "".join(t for t, _ in dump.json_pieces(PeerTable(start=1000), CONTEXT, 2000))
    assert json.loads(text)["peers"] == {}


def test_peers_no_longer_listed_are_accounted_in_others(tmp_path: Path) -> None:
    table = sample_table()
    table.retire([peer_key("fd77::2"), peer_key("10.77.0.10")])
    doc = json_document(table, CONTEXT, 2000)
    assert doc["others"] == {"peers": 2, "packets": 5, "bytes": 530}
    listed = sum(p["packets"] for p in doc["peers"].values())
    assert listed + doc["others"]["packets"] == 12 == doc["totals"]["packets"]
    stats = tmp_path / "n.stats"
    stats.write_text(render_perl(table, CONTEXT, 2000))
    assert "# others:\t2 peers, 5 packets, 530 bytes no longer listed" in stats.read_text()
    assert len(perl_read(stats)) == 2


def test_a_failed_atomic_write_leaves_the_old_file_and_no_scratch(tmp_path: Path) -> None:
    target = tmp_path / "n.json"
    target.write_text("old")

    def failing() -> Iterator[str]:
        yield "new, half"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(target, failing())
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]


def test_atomic_write_never_follows_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "n.json").symlink_to(victim)
    write_atomically(tmp_path / "n.json", "dump", mode=0o640)
    assert victim.read_text() == "precious"
    assert not (tmp_path / "n.json").is_symlink()
    assert (tmp_path / "n.json").stat().st_mode & 0o777 == 0o640
