"""--http on a counting instance: reports of known traffic, their cache, and who may read them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import TIME_SCALE, DaemonProcess, NetnsPair

pytestmark = pytest.mark.privileged

PORT = 8080  # the namespace is new: nothing else listens there
CLIENT = r"""
import json, sys, urllib.error, urllib.request
base = sys.argv[1]
for spec in sys.argv[2:]:
    method, _, path = spec.partition(" ")
    request = urllib.request.Request(base + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, headers, body = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, ConnectionError, OSError) as error:  # closed unanswered
        status, headers, body = 0, {}, type(getattr(error, "reason", error)).__name__.encode()
    print(json.dumps({"status": status, "headers": headers, "body": body.decode()}))
"""


def ask(pair: NetnsPair, ns: str, *requests: str) -> list[dict[str, Any]]:
    """Each request ("GET /path") from namespace ns, in order: status, headers, body."""
    out = pair.ns(ns, sys.executable, "-c", CLIENT, f"http://{pair.local_v4}:{PORT}",
                  *requests)
    return [json.loads(line) for line in out.stdout.splitlines()]


def udp_from(pair: NetnsPair, peer: str, count: int) -> list[bytes]:
    return [ip_frame(peer, pair.local_v4, "udp", 40)] * count


def test_reports_over_http_of_known_traffic(pair: NetnsPair, workdir: Path) -> None:
    # The filter keeps the HTTP exchanges themselves out of the counts. The refresh
    # interval must outlast the first two asks (a client process each, slow in a VM).
    daemon = DaemonProcess(pair, workdir, "--filter", "udp", "--http",
                           f"{pair.local_v4}:{PORT}", "--http-refresh",
                           str(round(6 * TIME_SCALE)), "--allow", pair.local_v4)
    try:
        pair.inject_ingress(udp_from(pair, "10.77.3.1", 7) + udp_from(pair, "10.77.3.2", 3),
                            workdir)
        report, dump, text, head = ask(pair, pair.local, "GET /report.json", "GET /dump.json",
                                       "GET /report.txt", "HEAD /report.txt")
        pair.inject_ingress(udp_from(pair, "10.77.3.1", 5), workdir)
        (cached,) = ask(pair, pair.local, "GET /report.json")
        time.sleep(int(cached["headers"]["Cache-Control"].removeprefix("max-age=")) + 1)
        (fresh,) = ask(pair, pair.local, "GET /report.json")
        (refused,) = ask(pair, pair.remote, "GET /report.json")
        (html,) = ask(pair, pair.local, "GET /?by=domain")
    finally:
        assert daemon.stop() == 0

    assert [r["status"] for r in (report, dump, text, head, cached, fresh)] == [200] * 6
    document = json.loads(dump["body"])
    peers = document["peers"]
    assert {a: p["packets"] for a, p in peers.items()} == {"10.77.3.1": 7, "10.77.3.2": 3}
    totals = json.loads(report["body"])["totals"]
    assert totals["packets"] == sum(p["packets"] for p in peers.values()) == 10
    assert totals["bytes"] == sum(p["bytes"] for p in peers.values())
    assert totals["peers"] == 2 and totals["groups"] == 1
    assert json.loads(report["body"])["dump"]["current"] == document["current"]
    assert "users\t\t= 2\n" in text["body"]
    assert head["body"] == "" and head["headers"]["Content-Length"] == \
        str(len(text["body"].encode()))

    # Within the refresh interval: the same dump; after it, a new one with the new frames.
    before = json.loads(cached["body"])
    assert before["dump"]["current"] == document["current"]
    assert before["totals"]["packets"] == 10
    after = json.loads(fresh["body"])
    assert after["dump"]["current"] > document["current"]
    assert after["totals"]["packets"] == 15

    assert refused["status"] == 0  # closed at accept, unanswered
    assert f"refused a report request from {pair.remote_v4}" in daemon.stderr

    assert html["status"] == 200, html["body"]
    assert html["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Security-Policy" in html["headers"]
