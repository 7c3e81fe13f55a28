"""Dump documents and their atomic writing. Building a document is pure.

JSON schema version 1 (design §2). The upstream rate fields (R, W and the
global hit and byte rates) stay zero until the accounting issue implements
the upstream rate math; packets, bytes and totals are exact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncebpf.accounting import PeerTable, peer_text

SCHEMA_VERSION = 1
UPSTREAM_DEFAULT_SNAPLEN = 38


@dataclass(frozen=True)
class DumpContext:
    """What a dump says about the run, beside the table itself."""

    name: str
    device: str
    mode: str
    filter: str = ""
    promiscuous: bool = False


def json_document(table: PeerTable, context: DumpContext, now: float) -> dict[str, Any]:
    start = int(table.start)
    peers = {}
    for key in sorted(table.peers):
        record = table.peers[key]
        peers[peer_text(key)] = {
            "B": record.bytes,
            "C": record.packets,
            "E": int(record.first_seen),
            "N": [],
            "R": 0,
            "S": start,
            "T": 0,
            "W": 0,
            "packets": record.packets,
            "bytes": record.bytes,
        }
    totals = table.totals
    return {
        "version": SCHEMA_VERSION,
        "name": context.name,
        "start": start,
        "current": int(now),
        "hits_per_minute": 0,
        "bytes_per_second": 0,
        "users": len(peers),
        "device": context.device,
        "promiscuous": context.promiscuous,
        "filter": context.filter,
        "mode": context.mode,
        "match": None,
        "nomatch": None,
        "payload": None,
        "snaplen": UPSTREAM_DEFAULT_SNAPLEN,
        "totals": {
            "packets": totals.packets,
            "bytes": totals.bytes,
            "filtered_out": totals.filtered_out,
            "unparsed": totals.unparsed,
            "overflow": totals.overflow,
        },
        "peers": peers,
    }


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside path, then rename: readers never see half a file."""
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        os.unlink(scratch)
        raise
