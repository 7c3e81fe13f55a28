"""The Prometheus metrics (ncebpf.export.prometheus), without root: what a drain leaves for a
scrape, read back by prometheus-client's own parser of the text format."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ncebpf.accounting import PeerTable, Totals, peer_key
from ncebpf.collector import DrainReport
from ncebpf.config import ConfigError, read_file, to_toml
from ncebpf.export.prometheus import Metrics, top_peers, top_prefixes
from ncebpf.http import ReportServer
from ncebpf.peerindex import key_array
from ncebpf.resolve import Outcome, lookup_result
from tests.test_http import Clock, CountingFetch, _build, get

LABELS = {"name": "t", "interface": "eth0", "mode": "tc", "filter": "udp"}


def table_of(bytes_by_peer: dict[str, tuple[int, int, int, int]]) -> PeerTable:
    """A table whose peers counted (in packets, in bytes, out packets, out bytes)."""
    table = PeerTable(1_000)
    keys = [peer_key(address) for address in bytes_by_peer]
    rows = table.rows_of(key_array(b"".join(keys)), 1_001)
    table.count(rows, np.array(list(bytes_by_peer.values()), dtype=np.uint64), 1_002)
    return table


def scraped(metrics: Metrics, accept: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                        float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    body, _ = metrics.exposition(accept)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_top_peers_are_the_n_with_most_bytes_both_ways_most_first() -> None:
    table = table_of({"10.77.1.1": (1, 100, 0, 0), "10.77.1.2": (1, 50, 1, 60),
                      "fd77::9": (2, 300, 0, 0), "10.77.1.3": (1, 10, 0, 0)})
    top = top_peers(table, 3)
    assert [r.label for r in top] == ["fd77::9", "10.77.1.2", "10.77.1.1"]
    assert top[1].counts == (1, 50, 1, 60)
    assert top_peers(table, 0) == ()
    assert [r.label for r in top_peers(table, 10)] == ["fd77::9", "10.77.1.2", "10.77.1.1",
                                                       "10.77.1.3"]


@pytest.mark.parametrize(("address", "cidr4", "cidr6"), [
    ("10.77.1.200", 24, 48), ("10.77.1.200", 21, 48), ("10.77.255.255", 32, 48),
    ("10.77.255.255", 0, 48), ("fd77:1:2:3::9", 24, 48), ("fd77:1:2:ffff::9", 24, 52),
    ("fd77:1:2:ffff::9", 24, 64), ("fd77::1", 24, 0)])
def test_a_peer_s_prefix_is_its_network(address: str, cidr4: int, cidr6: int) -> None:
    length = cidr4 if "." in address else cidr6
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    ((prefix, counts),) = [(r.label, r.counts) for r in
                           top_prefixes(table_of({address: (1, 60, 2, 80)}), 5, cidr4, cidr6)]
    assert prefix == str(network) and counts == (1, 60, 2, 80)


def test_prefixes_longer_than_the_integers_are_refused() -> None:
    with pytest.raises(ValueError, match="at most /32 and /64"):
        top_prefixes(table_of({"fd77::1": (1, 60, 0, 0)}), 5, 24, 65)


def test_top_prefixes_sum_their_peers() -> None:
    table = table_of({"10.77.1.1": (1, 100, 0, 0), "10.77.1.2": (2, 200, 1, 10),
                      "10.77.2.1": (1, 250, 0, 0), "fd77:0:1::1": (1, 40, 0, 0),
                      "fd77:0:1:2::1": (1, 60, 0, 0)})
    top = top_prefixes(table, 2)
    assert [(r.label, r.counts) for r in top] == [("10.77.1.0/24", (3, 300, 1, 10)),
                                                  ("10.77.2.0/24", (1, 250, 0, 0))]
    assert [r.label for r in top_prefixes(table, 5)][-1] == "fd77:0:1::/48"
    assert top_prefixes(table, 5)[-1].counts == (2, 100, 0, 0)


def test_a_scrape_shows_the_last_drain_exactly() -> None:
    table = table_of({"10.77.1.1": (7, 700, 2, 20), "10.77.1.2": (3, 300, 0, 0)})
    table.totals = Totals(packets=12, bytes=1020, out_packets=2, out_bytes=20,
                          filtered_out=5, unparsed=1, overflow=2**40 + 1)
    metrics = Metrics(LABELS, top=1)
    metrics.drained(DrainReport(2, 2, 0, 0.004), table, 4096, dumps_written=3,
                    dumps={("control", "written"): 2, ("udp", "failed"): 1},
                    dns={"name": 4, "no_answer": 1})
    got = scraped(metrics)
    frames = {labels: v for (name, labels), v in got.items() if name == "ncebpf_frames_total"}
    assert frames == {
        (("direction", "in"), ("outcome", "matched")): 10,
        (("direction", "out"), ("outcome", "matched")): 2,
        (("outcome", "filtered_out"),): 5, (("outcome", "unparsed"),): 1,
        (("outcome", "unattributed"),): 0, (("outcome", "overflow"),): 2**40 + 1,
        (("outcome", "dropped"),): 0}
    assert got[("ncebpf_bytes_total", (("direction", "in"), ("outcome", "matched")))] == 1000
    assert got[("ncebpf_bytes_total", (("direction", "out"), ("outcome", "matched")))] == 20
    assert got[("ncebpf_peers", ())] == 2
    assert got[("ncebpf_peer_map_capacity", ())] == 4096
    assert got[("ncebpf_start_time_seconds", ())] == 1_000
    assert got[("ncebpf_dumps_written_total", ())] == 3
    assert got[("ncebpf_dump_requests_total", (("result", "failed"), ("via", "udp")))] == 1
    assert got[("ncebpf_dns_lookups_total", (("result", "name"),))] == 4
    assert got[("ncebpf_drain_duration_seconds_count", ())] == 1
    assert got[("ncebpf_drain_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("ncebpf_info", tuple(sorted(LABELS.items())))] == 1
    peers = {labels: v for (name, labels), v in got.items() if name == "ncebpf_peer_frames_total"}
    assert peers == {  # the top 1 only: 10.77.1.1, 720 bytes against 300
        (("direction", "in"), ("peer", "10.77.1.1")): 7,
        (("direction", "out"), ("peer", "10.77.1.1")): 2}
    assert got[("ncebpf_peer_bytes_total", (("direction", "in"), ("peer", "10.77.1.1")))] \
        == 700


def test_counts_the_source_cannot_know_have_no_series() -> None:
    table = table_of({"10.77.1.1": (1, 60, 0, 0)})
    table.totals = Totals(packets=1, bytes=60, unknown={"unparsed": "libpcap filters first"})
    metrics = Metrics(LABELS)
    metrics.drained(DrainReport(1, 1, 0, 0.001), table, 100)
    outcomes = {dict(labels)["outcome"] for (name, labels) in scraped(metrics)
                if name == "ncebpf_frames_total"}
    assert "unparsed" not in outcomes and "filtered_out" in outcomes


def test_per_prefix_series_when_asked() -> None:
    table = table_of({"10.77.1.1": (1, 100, 0, 0), "10.77.1.2": (1, 100, 0, 0)})
    metrics = Metrics(LABELS, by="cidr")
    metrics.drained(DrainReport(2, 2, 0, 0.001), table, 100)
    got = scraped(metrics)
    assert got[("ncebpf_prefix_bytes_total", (("direction", "in"),
                                              ("prefix", "10.77.1.0/24")))] == 200
    assert not any(name.startswith("ncebpf_peer_bytes") for name, _ in got)


def test_before_any_sample_a_scrape_shows_the_instance_only() -> None:
    got = scraped(Metrics(LABELS))
    assert list(got) == [("ncebpf_info", tuple(sorted(LABELS.items())))]


def test_a_sample_at_the_start_has_every_series_and_every_known_label_at_0() -> None:
    table = table_of({"10.77.1.1": (2, 120, 0, 0)})  # resumed from a checkpoint, say
    table.totals = Totals(packets=2, bytes=120)
    metrics = Metrics(LABELS)
    metrics.take(table, 100)
    got = scraped(metrics)
    assert got[("ncebpf_frames_total", (("direction", "in"), ("outcome", "matched")))] == 2
    assert {dict(labels)["result"]: v for (name, labels), v in got.items()
            if name == "ncebpf_dns_lookups_total"} == {"name": 0, "no_name": 0, "no_answer": 0}
    assert len([name for name, _ in got if name == "ncebpf_dump_requests_total"]) == 6
    assert got[("ncebpf_drain_duration_seconds_count", ())] == 0


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    metrics = Metrics(LABELS)
    metrics.drained(DrainReport(0, 0, 0, 0.001), table_of({}), 100)
    body, media_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert media_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert metrics.exposition("")[1].startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize(("outcome", "result"), [
    (None, "no_answer"), (Outcome(["a.example"], 60), "name"), (Outcome([], 60), "no_name"),
    (Outcome([":ns.example"], 60), "no_name")])
def test_a_lookup_counts_by_its_result(outcome: Outcome | None, result: str) -> None:
    assert lookup_result(outcome) == result


# --- the servers and the settings ---------------------------------------------------------

def metrics_after_a_drain() -> Metrics:
    metrics = Metrics(LABELS)
    table = table_of({"10.77.1.1": (2, 120, 0, 0)})
    table.totals = Totals(packets=2, bytes=120)
    metrics.drained(DrainReport(1, 1, 0, 0.001), table, 100)
    return metrics


def test_the_metrics_server_serves_metrics_alone() -> None:
    with ReportServer("127.0.0.1", 0, None, 0, allowed=None,
                      scrape=metrics_after_a_drain().exposition) as server:
        scrape = get(server, "/metrics")
        head = get(server, "/metrics", "HEAD")
        report = get(server, "/report.json")
    assert scrape.status == 200 and scrape.headers["Cache-Control"] == "no-store"
    assert scrape.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'ncebpf_frames_total{direction="in",outcome="matched"} 2.0' in scrape.body
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(scrape.body))
    assert report.status == 404 and report.body == b"no page '/report.json': /metrics\n"


def test_the_report_server_serves_metrics_beside_the_reports() -> None:
    fetch = CountingFetch(Clock())
    with ReportServer("127.0.0.1", 0, fetch, 60, allowed=None,
                      scrape=metrics_after_a_drain().exposition) as server:
        scrape = get(server, "/metrics")
        report = get(server, "/report.json")
        missing = get(server, "/nothing")
    assert scrape.status == 200 and b"ncebpf_peers 1.0" in scrape.body
    assert report.status == 200
    assert missing.body.endswith(b"/dump.json, /metrics\n")
    assert fetch.calls == 1  # the scrape asked for no dump


def test_metrics_settings_are_checked_and_read_back(tmp_path: Path) -> None:
    config = _build(tmp_path, metrics="9464", metrics_top=5, metrics_by="cidr")
    assert (config.metrics, config.metrics_top, config.metrics_by) == \
        ("127.0.0.1:9464", 5, "cidr")
    assert _build(tmp_path).metrics == "" and _build(tmp_path).metrics_top == 50
    with pytest.raises(ConfigError, match=r"metrics: \"nowhere:1\" is not an address and port"):
        _build(tmp_path, metrics="nowhere:1")
    with pytest.raises(ConfigError, match="metrics_by: \"domain\""):
        _build(tmp_path, metrics_by="domain")
    with pytest.raises(ConfigError, match="metrics_top: -1 is out of range"):
        _build(tmp_path, metrics_top=-1)
    with pytest.raises(ConfigError, match="metrics_top: 1001 is out of range"):
        _build(tmp_path, metrics_top=1001)
    with pytest.raises(ConfigError, match="is --http's too"):
        _build(tmp_path, metrics="9464", http="127.0.0.1:9464")
    assert _build(tmp_path, allow=["10.77.0.9"], metrics="10.77.0.1:9464").allow == \
        ("10.77.0.9",)
    path = tmp_path / "web.toml"
    path.write_text(to_toml(config))
    settings = read_file(path)
    assert (settings["metrics"], settings["metrics_top"], settings["metrics_by"]) == \
        ("127.0.0.1:9464", 5, "cidr")
