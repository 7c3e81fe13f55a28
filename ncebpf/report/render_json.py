"""The report as JSON for scripts (README "Report JSON"). Pure.

Rates are given as the dump keeps them (hits_per_hour, bytes_per_hour,
from R and W) and as reports show them (per minute, per second); exact
counts are null where the dump has none (an upstream `.stats`).
"""

from __future__ import annotations

import json
from typing import Any

from ncebpf.report.model import Group, Peer, Report, Snapshot

REPORT_SCHEMA_VERSION = 1


def _peer(peer: Peer) -> dict[str, Any]:
    return {"address": peer.address, "names": list(peer.N), "hits_per_hour": peer.R,
            "bytes_per_hour": peer.W, "last": peer.E, "packets": peer.packets,
            "bytes": peer.bytes}


def _group(group: Group) -> dict[str, Any]:
    return {"key": group.key, "label": group.label, "soa": group.soa,
            "hits_per_hour": group.R, "bytes_per_hour": group.W,
            "hits_per_minute": round(group.R / 60), "bytes_per_second": round(group.W / 3600),
            "last": group.E, "peers": len(group.members), "packets": group.packets,
            "bytes": group.bytes, "members": [_peer(p) for p in group.members]}


def dump_summary(snapshot: Snapshot) -> dict[str, Any]:
    """What the dump says about its run, without the peers. For a report over several
    sources, hosts holds each one's summary (its users: its peers), failures the sources
    that gave none with their error, and partial says whether any failed."""
    summary: dict[str, Any] = {
        "source": snapshot.source, "name": snapshot.name, "start": snapshot.start,
        "current": snapshot.current, "hits_per_minute": snapshot.hits_per_minute,
        "bytes_per_second": snapshot.bytes_per_second, "users": snapshot.users,
        "device": snapshot.device, "promiscuous": snapshot.promiscuous,
        "filter": snapshot.filter, "mode": snapshot.mode, "match": snapshot.match,
        "nomatch": snapshot.nomatch, "payload": snapshot.payload,
        "snaplen": snapshot.snaplen, "totals": dict(snapshot.totals),
        "others": dict(snapshot.others)}
    if snapshot.unknown:
        summary["totals"]["unknown"] = dict(snapshot.unknown)
    # A report over several sources: each one's own summary, and those that gave no dump.
    summary["hosts"] = [dump_summary(part) for part in snapshot.parts]
    summary["failures"] = [{"source": source, "error": error}
                           for source, error in snapshot.failures]
    summary["partial"] = snapshot.partial
    return summary


def report_document(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object (schema REPORT_SCHEMA_VERSION)."""
    options, totals = report.options, report.totals
    return {
        "version": REPORT_SCHEMA_VERSION,
        "by": options.by, "cidr4": options.cidr4, "cidr6": options.cidr6,
        "domain_rule": options.domain_rule, "sort": options.sort, "top": options.top,
        "dump": dump_summary(report.snapshot),
        "totals": {"groups": totals.groups, "shown": len(report.groups),
                   "peers": totals.peers, "hits_per_hour": totals.R,
                   "bytes_per_hour": totals.W, "hits_per_minute": round(totals.R / 60),
                   "bytes_per_second": round(totals.W / 3600), "packets": totals.packets,
                   "bytes": totals.bytes},
        "groups": [_group(g) for g in report.groups],
    }


def render_json(report: Report) -> str:
    """The document on one line: indenting it would take json's pure-Python encoder, five
    times slower than its C one (a report of 100 000 peers: 0.85 s against 0.15 s)."""
    return json.dumps(report_document(report)) + "\n"
