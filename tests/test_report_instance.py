"""`ncebpf report` on a running instance counting known traffic (privileged, in namespaces)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ncebpf.filter.frames import ip_frame
from tests.netns import NCEBPF, DaemonProcess, NetnsPair, run

pytestmark = pytest.mark.privileged

# (peer, frames, payload): prime counts, so no two groups can share a total by accident.
TRAFFIC = [("10.77.1.1", 7, 100), ("10.77.1.2", 11, 40), ("10.77.2.9", 13, 300),
           ("fd77:1::1", 17, 20), ("fd77:1:0:5::2", 19, 60), ("fd77:2::3", 3, 0)]


def sent_frames(pair: NetnsPair) -> tuple[list[bytes], dict[str, tuple[int, int]]]:
    frames: list[bytes] = []
    per_peer: dict[str, tuple[int, int]] = {}
    for peer, count, payload in TRAFFIC:
        local = pair.local_v6 if ":" in peer else pair.local_v4
        frame = ip_frame(peer, local, "udp", payload)
        frames += [frame] * count
        per_peer[peer] = (count, count * len(frame))
    return frames, per_peer


def test_report_of_the_running_instance(quiet_pair: NetnsPair, workdir: Path) -> None:
    pair = quiet_pair
    daemon = DaemonProcess(pair, workdir, "--direction", "ingress")
    try:
        frames, per_peer = sent_frames(pair)
        assert pair.inject_ingress(frames, workdir) == len(frames)
        text = run(*NCEBPF, "report", *daemon.args).stdout
        report = json.loads(run(*NCEBPF, "report", "--format", "json", *daemon.args).stdout)
        by_domain = run(*NCEBPF, "report", "--by", "domain", *daemon.args).stdout
        dump = daemon.dump()
    finally:
        assert daemon.stop() == 0, daemon.stderr
    prefixes = {"10.77.1.0/24": ["10.77.1.1", "10.77.1.2"], "10.77.2.0/24": ["10.77.2.9"],
                "fd77:1::/48": ["fd77:1::1", "fd77:1:0:5::2"], "fd77:2::/48": ["fd77:2::3"]}
    groups = {g["key"]: g for g in report["groups"]}
    assert sorted(groups) == sorted(prefixes)
    for prefix, members in prefixes.items():
        group = groups[prefix]
        assert [m["address"] for m in group["members"]] == members
        assert group["packets"] == sum(per_peer[m][0] for m in members)
        assert group["bytes"] == sum(per_peer[m][1] for m in members)
    # The report's totals are the dump's, and the traffic sent.
    assert report["totals"]["packets"] == sum(p for p, _ in per_peer.values()) == \
        dump["totals"]["packets"]  # type: ignore[index]
    assert report["totals"]["bytes"] == sum(b for _, b in per_peer.values()) == \
        dump["totals"]["bytes"]  # type: ignore[index]
    assert report["dump"]["mode"] == dump["mode"] and report["dump"]["device"] == pair.local_if
    # The text report: upstream's layout, one summary line per group, every peer listed.
    assert text.startswith("\n# Net::Connection::Sniffer version 0.36\n")
    assert "\nComposite report, CIDR/24, IPv6 /48 ordered by BANDWIDTH\n" in text
    summaries = re.findall(r"^ +\d+\t -- \d+\t -- (\d+)\t[a-z]{3} \d\d \d\d:\d\d:\d\d$", text,
                           re.MULTILINE)
    assert sorted(map(int, summaries)) == sorted(len(m) for m in prefixes.values())
    for peer in per_peer:
        assert f"\n{peer}\t\n" in text
    assert text.endswith(f"users\t\t= {len(per_peer)}\n")
    # Nobody has a name here (--no-resolve): one group.
    assert by_domain.count(" -- 6\t") == 1
