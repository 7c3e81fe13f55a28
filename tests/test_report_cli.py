"""`ncebpf report` from the command line: sources, options, output, errors. No root."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.dump import DumpContext, json_document, render_json, render_perl
from tests.netns import NCEBPF, run


@pytest.fixture
def dumps(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    table = PeerTable(start=1_000_000)
    for i, (address, packets) in enumerate([("10.77.1.1", 7), ("10.77.1.2", 11),
                                            ("10.77.2.1", 13), ("fd77:1::1", 17)]):
        table.add(peer_key(address), packets, packets * 100, 1_000_010 + i, 1_000_010 + i)
    table.totals = Totals(packets=48, bytes=4800)
    table.peers[peer_key("10.77.1.1")].N = ["a.example.co.uk"]
    table.peers[peer_key("10.77.2.1")].N = ["b.example.co.uk"]
    context = DumpContext("t", "eth0", "tc", filter="udp")
    json_path, stats_path = tmp_path / "t.json", tmp_path / "t.stats"
    json_path.write_text(render_json(json_document(table, context, 1_000_100)))
    stats_path.write_text(render_perl(table, context, 1_000_100))
    yield json_path, stats_path


def report(*args: str, check: bool = True) -> str:
    env = dict(os.environ, TZ="UTC")
    import subprocess

    result = subprocess.run([*NCEBPF, "report", *args], capture_output=True, text=True,
                            env=env, check=False, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout if check else result.stderr


def test_json_and_stats_give_the_same_text_report(dumps: tuple[Path, Path]) -> None:
    json_path, stats_path = dumps
    from_json, from_stats = report(str(json_path)), report(str(stats_path))
    assert from_json == from_stats
    assert "\nComposite report, CIDR/24, IPv6 /48 ordered by BANDWIDTH\n" in from_json
    assert from_json.endswith("users\t\t= 4\n")


def test_by_domain_json_and_output_file(dumps: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    report("--by", "domain", "--format", "json", "-o", str(out), str(dumps[0]))
    document = json.loads(out.read_text())
    rows = {g["label"]: [m["address"] for m in g["members"]] for g in document["groups"]}
    assert rows == {"example.co.uk": ["10.77.1.1", "10.77.2.1"],
                    "(no name)": ["10.77.1.2", "fd77:1::1"]}
    assert document["totals"]["packets"] == 48 == document["dump"]["totals"]["packets"]


def test_html_to_a_file(dumps: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    report("--format", "html", "--output", str(out), str(dumps[1]))
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "10.77.2.1" in page


@pytest.mark.parametrize(("args", "message"), [
    (["/nonexistent/x.json"], "/nonexistent/x.json"),
    (["--cidr4", "33", "x"], "--cidr4"),
    (["--by", "asn", "x"], "--by"),
    (["--top", "0", "x"], "--top"),
    (["a", "a"], "a is given twice"),
    (["ssh://gw1", "ssh://gw1:22/ncebpf"], "ssh://gw1:22/ncebpf is ssh://gw1 again"),
    (["--remote-ncebpf", " ", "ssh://gw1"], "--remote-ncebpf is empty"),
    (["ssh://gw1/-x"], "not an instance name"),
])
def test_errors_are_one_line(args: list[str], message: str) -> None:
    stderr = report(*args, check=False)
    assert message in stderr


def test_a_hostile_stats_file_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "h.stats"
    hostile.write_text("\n# Net::Connection::Sniffer version 0.36\n{\n  my $dump = {\n"
                       f"\t'10.77.0.1'\t=> {{ B => `touch {marker}`, }},\n  }};\n}}\n")
    stderr = report(str(hostile), check=False)
    assert "h.stats" in stderr and len(stderr.strip().splitlines()) == 1
    time.sleep(0.1)
    assert not marker.exists()


def test_report_without_an_instance_says_how_to_start_one(workdir: Path) -> None:
    for directory in ("state", "run"):
        (workdir / directory).mkdir()
    result = run(*NCEBPF, "report", "--name", "absent", "--statedir", str(workdir / "state"),
                 "--piddir", str(workdir / "run"), check=False)
    assert result.returncode == 1
    assert "no ncebpf instance named 'absent' is running" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_output_through_a_link_and_errors_that_name_the_output(dumps: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    target = tmp_path / "www" / "link.txt"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    report("-o", str(link), str(dumps[0]))
    assert link.is_symlink() and target.read_text().startswith("\n# Net::Connection::Sniffer")
    stderr = report("-o", str(tmp_path / "nowhere" / "r.txt"), str(dumps[0]), check=False)
    assert f"could not write {tmp_path / 'nowhere' / 'r.txt'}: No such file or directory" \
        in stderr and len(stderr.strip().splitlines()) == 1


def test_sort_by_exact_bytes(dumps: tuple[Path, Path]) -> None:
    document = json.loads(report("--by", "peer", "--sort", "bytes", "--format", "json",
                                 str(dumps[0])))
    assert [g["bytes"] for g in document["groups"]] == [1700, 1300, 1100, 700]


def test_several_files_make_one_report_and_a_missing_one_makes_it_partial(
        dumps: tuple[Path, Path], tmp_path: Path) -> None:
    import subprocess

    json_path, stats_path = dumps
    copy = tmp_path / "copy.json"
    copy.write_bytes(json_path.read_bytes())
    document = json.loads(report("--by", "peer", "--format", "json", str(json_path),
                                 str(copy)))
    assert document["totals"]["packets"] == 2 * 48
    assert [host["source"] for host in document["dump"]["hosts"]] == [str(json_path),
                                                                       str(copy)]
    hosts = tmp_path / "fleet"
    hosts.write_text(f"# two dumps and a missing one\n{copy}\n{tmp_path / 'gone.json'}\n")
    args = [*NCEBPF, "report", str(json_path), "--hosts", str(hosts)]
    partial = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    assert partial.returncode == 1
    assert f"# host:\t{tmp_path / 'gone.json'}\tFAILED: no such file" in partial.stdout
    assert "the report is partial: 1 of 3 sources gave no dump" in partial.stderr
    accepted = subprocess.run([*args, "--partial-ok"], capture_output=True, text=True,
                              check=False, timeout=60)
    assert accepted.returncode == 0 and accepted.stdout == partial.stdout
    out = tmp_path / "kept.txt"
    out.write_text("the last good report\n")
    nothing = subprocess.run([*NCEBPF, "report", "--partial-ok", "-o", str(out),
                              str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True,
                             text=True, check=False, timeout=60)
    # No source at all is no report, --partial-ok or not, and the last one stays.
    assert nothing.returncode == 1 and "none of the 2 sources gave a dump" in nothing.stderr
    assert out.read_text() == "the last good report\n"
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    assert "no sources in it" in report("--hosts", str(empty), check=False)
