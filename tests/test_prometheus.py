"""--metrics on a counting instance, scraped by a real Prometheus server (Debian's
`prometheus`) that the test starts in the test namespace: PromQL through its HTTP API gives
the JSON dump's totals, and the peers' series, exactly."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import TIME_SCALE, DaemonProcess, NetnsPair, stop_process

pytestmark = pytest.mark.privileged

METRICS_PORT = 9464
PROMETHEUS_PORT = 9090  # on the namespace's loopback: the namespace is new
# PromQL instant queries, each answered on a line as {"query": value or null}.
QUERY = r"""
import json, sys, urllib.parse, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for query in sys.argv[2:]:
    url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with opener.open(url, timeout=10) as answer:
            result = json.load(answer)["data"]["result"]
    except OSError:
        result = []
    print(json.dumps({query: float(result[0]["value"][1]) if result else None}))
"""


@contextlib.contextmanager
def prometheus(pair: NetnsPair, workdir: Path, target: str) -> Iterator[str]:
    """A Prometheus server scraping target every second, in the local namespace, its data in
    workdir; yields its base URL there. Stopped (killed if need be) on the way out."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: make test installs it "
                    "(scripts/install-system-deps --test)")
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      "scrape_configs:\n  - job_name: ncebpf\n"
                      f"    static_configs:\n      - targets: ['{target}']\n")
    base = f"http://127.0.0.1:{PROMETHEUS_PORT}"
    log = workdir / "prometheus.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            ["ip", "netns", "exec", pair.local, binary, f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60 * TIME_SCALE
        while up(pair, base) is None:
            assert server.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"prometheus never answered: " \
                                                f"{log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield base
    finally:
        stop_process(server, timeout=30)


def queried(pair: NetnsPair, base: str, *queries: str) -> dict[str, float | None]:
    out = pair.ns(pair.local, sys.executable, "-c", QUERY, base, *queries).stdout
    answers: dict[str, float | None] = {}
    for line in out.splitlines():
        answers.update(json.loads(line))
    return answers


def up(pair: NetnsPair, base: str) -> float | None:
    """Whether the server answers and has scraped ncebpf (1), or failed to (0)."""
    return queried(pair, base, 'up{job="ncebpf"}')['up{job="ncebpf"}']


def test_prometheus_shows_the_dump_s_totals_and_top_peers(pair: NetnsPair,
                                                          workdir: Path) -> None:
    target = f"{pair.local_v4}:{METRICS_PORT}"
    daemon = DaemonProcess(pair, workdir, "--filter", "udp", "--mode", "tc", "--interval",
                           "0.5", "--metrics", target, "--metrics-top", "2")
    try:
        with prometheus(pair, workdir, target) as base:
            frames = [ip_frame(f"10.77.3.{peer}", pair.local_v4, "udp", 40 + peer)
                      for peer, count in ((1, 7), (2, 3), (3, 1)) for _ in range(count)]
            pair.inject_ingress(frames, workdir)
            pair.inject_egress([ip_frame(pair.local_v4, "10.77.3.1", "udp", 100)] * 4, workdir)
            dump = daemon.dump()
            totals = dump["totals"]
            assert isinstance(totals, dict)
            expected = {
                'ncebpf_frames_total{outcome="matched",direction="in"}': totals["in_packets"],
                'ncebpf_frames_total{outcome="matched",direction="out"}': totals["out_packets"],
                'sum(ncebpf_bytes_total)': totals["bytes"],
                'ncebpf_bytes_total{direction="out"}': totals["out_bytes"],
                'ncebpf_frames_total{outcome="overflow"}': totals["overflow"],
                'ncebpf_peers': 3,
                'ncebpf_peer_frames_total{peer="10.77.3.1",direction="in"}': 7,
                'ncebpf_peer_frames_total{peer="10.77.3.1",direction="out"}': 4,
                'ncebpf_peer_bytes_total{peer="10.77.3.2",direction="in"}': 3 * (
                    len(ip_frame("10.77.3.2", pair.local_v4, "udp", 42))),
                'count(ncebpf_peer_frames_total{direction="in"})': 2,  # --metrics-top 2
                'ncebpf_dump_requests_total{via="control",result="written"}': 1,
            }
            deadline = time.monotonic() + 30 * TIME_SCALE
            while (got := queried(pair, base, *expected)) != expected:
                # The frames were counted before the dump: a scrape after its drain has
                # them all; one that never matches is a wrong figure, not a slow one.
                assert time.monotonic() < deadline, {q: (got[q], v) for q, v in
                                                     expected.items() if got[q] != v}
                time.sleep(1)
    finally:
        assert daemon.stop() == 0
    assert (totals["in_packets"], totals["out_packets"]) == (11, 4)
