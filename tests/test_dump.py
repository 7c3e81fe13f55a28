from __future__ import annotations

import json
from pathlib import Path

from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.dump import DumpContext, json_document, render_json, write_atomically

TOP_LEVEL = ["version", "name", "start", "current", "hits_per_minute", "bytes_per_second",
             "users", "device", "promiscuous", "filter", "mode", "match", "nomatch", "payload",
             "snaplen", "totals", "peers"]


def sample_table() -> PeerTable:
    table = PeerTable(start=1000.7)
    table.add(peer_key("fd77::2"), 3, 330, 1001.2, 1010.0)
    table.add(peer_key("10.77.0.10"), 2, 200, 1002.0, 1003.0)
    table.add(peer_key("10.77.0.9"), 1, 60, 1004.0, 1004.0)
    table.totals = Totals(packets=6, bytes=590, unparsed=4)
    return table


def test_document_follows_schema_version_1() -> None:
    doc = json_document(sample_table(), DumpContext("n", "eth1", "xdp"), now=2000.9)
    assert list(doc) == TOP_LEVEL
    assert doc["version"] == 1 and doc["start"] == 1000 and doc["current"] == 2000
    assert doc["users"] == 3
    assert doc["totals"] == {"packets": 6, "bytes": 590, "filtered_out": 0, "unparsed": 4,
                             "overflow": 0}
    assert list(doc["peers"]) == ["10.77.0.9", "10.77.0.10", "fd77::2"]
    peer = doc["peers"]["fd77::2"]
    assert list(peer) == ["B", "C", "E", "N", "R", "S", "T", "W", "packets", "bytes"]
    assert (peer["packets"], peer["bytes"], peer["E"], peer["S"]) == (3, 330, 1001, 1000)


def test_integers_stay_integers() -> None:
    text = render_json(json_document(sample_table(), DumpContext("n", "eth1", "xdp"), 2000.0))
    for peer in json.loads(text)["peers"].values():
        assert all(isinstance(peer[k], int) for k in ("B", "C", "E", "packets", "bytes"))


def test_atomic_write_replaces_and_leaves_no_scratch(tmp_path: Path) -> None:
    target = tmp_path / "n.json"
    target.write_text("old")
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["n.json"]
