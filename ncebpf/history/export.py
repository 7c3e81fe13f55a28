"""`ncebpf history export`: the history's rows as CSV or JSON, for audits and other tools.

One row per host, instance, bin and peer, at the finest resolution the
database still keeps (store.bin_rows_in), streamed: an export of a month of
5-minute bins never sits in memory whole. Fields: host, instance, bin_start
(epoch seconds) and bin_start_utc (ISO 8601), bin_seconds, peer, in_packets,
in_bytes, out_packets, out_bytes, first_seen, last_seen, names (space-separated).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ncebpf.history import store

FIELDS = ("host", "instance", "bin_start", "bin_start_utc", "bin_seconds", "peer",
          "in_packets", "in_bytes", "out_packets", "out_bytes", "first_seen", "last_seen",
          "names")
ROWS_PER_PIECE = 10_000


def record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A peer_bins row (its column order) as the export's fields. Pure."""
    host, instance, seconds, start, peer, *counts, first, last, names = row
    return {"host": host, "instance": instance, "bin_start": int(start),
            "bin_start_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(start))),
            "bin_seconds": int(seconds), "peer": peer,
            **dict(zip(store.COUNT_COLUMNS, (int(c) for c in counts), strict=True)),
            "first_seen": int(first), "last_seen": int(last), "names": names or ""}


def pieces(rows: Iterator[tuple[Any, ...]], fmt: str) -> Iterator[str]:
    """The export text of rows, in pieces of ROWS_PER_PIECE rows. Pure."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n")
        writer.writeheader()
        for n, row in enumerate(rows, 1):
            writer.writerow(record(row))
            if n % ROWS_PER_PIECE == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
        return
    yield "["
    separator = "\n"
    batch: list[str] = []
    for row in rows:
        batch.append(separator + json.dumps(record(row)))
        separator = ",\n"
        if len(batch) == ROWS_PER_PIECE:
            yield "".join(batch)
            batch = []
    yield "".join(batch) + "\n]\n"


def export_pieces(url: str, since: int, until: int, hosts: Sequence[str], fmt: str
                  ) -> Iterator[str]:
    """The export of [since, until) from the database at url, of the hosts named (HOST or
    HOST/NAME; all when none). Raises HistoryError when the database cannot be read."""
    with store.reading(url) as engine:
        yield from pieces(store.bin_rows_in(engine, since, until,
                                            store.chosen_sources(engine, hosts)), fmt)
