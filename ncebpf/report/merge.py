"""Several dumps as one: the report over a fleet of hosts (issue 15). Pure.

Upstream's coalescer (spec §11.8) summed the hosts' tables and lost on the
way what a reader needs to trust the sum: its E was meant to be the latest
contact but copied a C, names were merged by an unescaped regex, and a host
that failed left no trace but a smaller total. Here:

- a peer seen by several hosts gets B, C, R, W and the exact counts
  (packets, bytes, per direction) summed; E (last rate update, the report's
  "last contact") and T (the next PTR refresh) are the latest, S the
  earliest; its names are the union in first-seen order, hosts taken in
  the order given, compared as strings;
- the dumps' totals and `others` are summed, a total that one dump does not
  know (None) is unknown in the sum;
- the merged Snapshot keeps every part without its peers (parts) and every
  source that gave no dump with its error (failures), so that renderers can
  show per-host totals and say that a report is partial.

Peers are matched by address value, not text: `fd77::1` and
`fd77:0:0::1` are one peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

from ncebpf.report.aggregate import address_order
from ncebpf.report.model import TOTAL_FIELDS, Peer, Snapshot

_T = TypeVar("_T")
VARIES = "(varies by host)"


def merge(parts: Sequence[Snapshot], failures: Sequence[tuple[str, str]] = ()) -> Snapshot:
    """The dumps in parts as one Snapshot, in the order given; failures are (source, error)
    pairs for the sources that gave none.

    start is the earliest start, current the latest; the rates of the header
    (hits_per_minute, bytes_per_second) are the parts' sums; users is the
    number of distinct peers. device, filter and mode are the parts' own
    when they all agree, else VARIES; match,
    nomatch, payload and snaplen the parts' when they agree, else None. The
    header is each part's own, after a `# host:` line that names it with
    its mode and totals, then a line per failure, then the grand total in
    upstream's words (spec §11.8). Raises ValueError for a peer whose
    address is not an address (a Snapshot never holds one).
    """
    merged: dict[tuple[int, bytes], Peer] = {}
    for part in parts:
        for peer in part.peers:
            key = address_order(peer.address)
            known = merged.get(key)
            merged[key] = peer if known is None else _merged_peer(known, peer)
    peers = tuple(merged[key] for key in sorted(merged))
    totals, unknown = _summed_totals(parts)
    others = {field: sum(part.others.get(field, 0) for part in parts)
              for field in ("peers", "packets", "bytes")} \
        if any(part.others for part in parts) else {}
    snapshot = Snapshot(
        source=_sources_text(len(parts), len(failures)),
        start=min((part.start for part in parts), default=0),
        current=max((part.current for part in parts), default=0),
        hits_per_minute=sum(part.hits_per_minute for part in parts),
        bytes_per_second=sum(part.bytes_per_second for part in parts),
        users=len(peers),
        device=_agreed(part.device for part in parts),
        promiscuous=any(part.promiscuous for part in parts),
        filter=_agreed(part.filter for part in parts),
        header="",
        peers=peers,
        mode=_agreed(part.mode for part in parts if part.mode) or None,
        match=_same(part.match for part in parts),
        nomatch=_same(part.nomatch for part in parts),
        payload=_same(part.payload for part in parts),
        snaplen=_same(part.snaplen for part in parts),
        totals=totals,
        unknown=unknown,
        others=others,
        parts=tuple(replace(part, peers=()) for part in parts),
        failures=tuple(failures),
    )
    return replace(snapshot, header=fleet_header(snapshot))


def _merged_peer(first: Peer, later: Peer) -> Peer:
    names = first.N + tuple(name for name in later.N if name not in first.N)
    return first._replace(
        B=first.B + later.B, C=first.C + later.C, R=first.R + later.R, W=first.W + later.W,
        E=max(first.E, later.E), S=min(first.S, later.S), T=max(first.T, later.T), N=names,
        packets=_sum_or_none(first.packets, later.packets),
        bytes=_sum_or_none(first.bytes, later.bytes),
        in_packets=_sum_or_none(first.in_packets, later.in_packets),
        in_bytes=_sum_or_none(first.in_bytes, later.in_bytes),
        out_packets=_sum_or_none(first.out_packets, later.out_packets),
        out_bytes=_sum_or_none(first.out_bytes, later.out_bytes))


def _sum_or_none(first: int | None, later: int | None) -> int | None:
    """A sum where both counts are known: a dump without exact counts (an upstream .stats)
    makes the peer's count unknown, never a smaller number that looks exact."""
    return None if first is None or later is None else first + later


def _summed_totals(parts: Sequence[Snapshot]
                   ) -> tuple[dict[str, int | None], dict[str, str]]:
    if not parts or any(not part.totals for part in parts):
        return {}, {}  # an upstream .stats among them: no totals, as for that file alone
    totals: dict[str, int | None] = {}
    unknown: dict[str, str] = {}
    for field in TOTAL_FIELDS:
        values = [part.totals.get(field) for part in parts]
        if any(value is None for value in values):
            totals[field] = None
            unknown[field] = "; ".join(
                f"{part.source}: {part.unknown.get(field) or 'unknown'}"
                for part, value in zip(parts, values, strict=True) if value is None)
        else:
            totals[field] = sum(value for value in values if value is not None)
    return totals, unknown


def _sources_text(parts: int, failures: int) -> str:
    """`3 hosts`, `3 hosts, 1 without a dump`: what a merged report comes from."""
    text = f"{parts + failures} host{'s' if parts + failures != 1 else ''}"
    return f"{text}, {failures} without a dump" if failures else text


def _agreed(values: Iterable[str]) -> str:
    """The value every part has, else VARIES (each host's own is in its header line)."""
    distinct = set(values)
    return VARIES if len(distinct) > 1 else distinct.pop() if distinct else ""


def _same(values: Iterable[_T]) -> _T | None:
    """The value every part has, else None (as in a dump that does not say)."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def host_line(part: Snapshot) -> str:
    """`mode tc, 12 peers, 3400 packets, 1200000 bytes`: what a part adds, in one line
    (packets and bytes only where its dump has them)."""
    counts = [f"mode {part.mode}"] if part.mode else []
    counts.append(f"{part.users} peer{'s' if part.users != 1 else ''}")
    counts += [f"{part.totals[field]} {field}" for field in ("packets", "bytes")
               if part.totals.get(field) is not None]
    return ", ".join(counts)


def fleet_header(snapshot: Snapshot) -> str:
    """The `.stats`-style header of a merged Snapshot: per host a `# host:` line and its own
    header, per failure a `# host:` line with FAILED and the error, then the grand total
    (spec §11.8's lines, with users the distinct peers) and, when a source failed, a line
    that says the report is partial."""
    lines = []
    for part in snapshot.parts:
        lines.append(f"\n# host:\t{part.source}\t{host_line(part)}{part.header}")
    for source, error in snapshot.failures:
        lines.append(f"\n# host:\t{source}\tFAILED: {error}\n")
    total = (f"\n# grand total all hosts\n# hits: \t{snapshot.hits_per_minute} per minute\n"
             f"# bytes:\t{snapshot.bytes_per_second} per second\n"
             f"# users:\t{snapshot.users}\n")
    lines.append(total)
    if snapshot.failures:
        lines.append(f"# partial:\t{len(snapshot.failures)} of "
                     f"{len(snapshot.failures) + len(snapshot.parts)} hosts gave no dump: "
                     "their peers are missing\n")
    return "".join(lines)
