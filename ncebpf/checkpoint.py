"""The peer table in a file and back: the continuity half of issue 13 (items 1 and 2).

A checkpoint holds everything PeerTable needs to go on as if the process had
never ended: its columns (numpy), the keys of its rows, peer names, the
scalars (start, global rates, others, the source's cumulative totals and the
totals base of the last reset) and, per row, the source's cumulative counters
as last read (PeerTable.source). A new daemon that reads the same kernel maps
(pinned in bpffs, ncebpf.kernel.pins) takes deltas against those and so counts
exactly what arrived since the checkpoint, no frame lost and none twice.

Format (version 1): an uncompressed NumPy .npz archive (numpy.lib.format,
read with allow_pickle=False) holding `header` (UTF-8 JSON as uint8: format,
written_at, dataset, digest, mode and the table's scalars), `live` (bool, one
per row the index handed out), `keys` (V20), `counts` and `source` ((n, 4)
uint64), B C R W E T first_seen last_seen and listed, all sliced to the
index's high-water row (views: nothing is copied to write them), `names`
(JSON as uint8: [[row, [name, ...]], ...]) and `evicting` (int64 rows the
source was about to delete when the checkpoint was written: PeerTable.evicting,
ncebpf.collector; absent in checkpoints from before it, which read as none).

Writing is atomic: a scratch file in the same directory, fsync, rename, fsync
of the directory, so a kill at any moment leaves the previous checkpoint or
the new one, never half of one (tests/test_checkpoint.py kills a writer).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import GlobalRates, Others, PeerTable, Totals
from ncebpf.errors import NcebpfError

FORMAT_VERSION = 1
_COLUMNS = ("listed", "counts", "source", "B", "C", "R", "W", "E", "T", "first_seen",
            "last_seen")
_TABLE_MEMBERS = frozenset(("header", "live", "keys", "names", "evicting", *_COLUMNS))


class CheckpointError(NcebpfError):
    """A checkpoint file exists but cannot be used (damaged, another format version)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself, beside the table.

    written_at: epoch seconds of the write (what a crash loses is counted from
    here when the source's counters did not survive); dataset: the id of the
    pinned maps whose values `source` holds ('' when the source keeps no counters
    across processes: pcap); digest: hex digest of what defines the data set
    (ncebpf.kernel.pins.dataset_digest); mode: the data path of the run."""

    written_at: float
    dataset: str
    digest: str
    mode: str


def _json_bytes(value: Any) -> npt.NDArray[np.uint8]:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def _from_json_bytes(array: npt.NDArray[np.uint8]) -> Any:
    return json.loads(array.tobytes().decode())


Extras = dict[str, npt.NDArray[Any]]  # members of the outputs' own (the history's open bin)


def table_arrays(table: PeerTable, info: CheckpointInfo, extras: Extras | None = None
                 ) -> dict[str, npt.NDArray[Any]]:
    """The archive's members for table: views of its columns up to the high-water row,
    and extras (names that are not the table's). Pure."""
    high = table.index.high
    header = {
        "format": FORMAT_VERSION, **asdict(info),
        "start": table.start, "track_created": table.track_created,
        "rates": asdict(table.rates), "others": asdict(table.others),
        "source_totals": asdict(table._source_totals),
        "totals_base": asdict(table._totals_base),
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        "header": _json_bytes(header),
        "live": table.index.live[:high],
        "keys": table.index.keys[:high],
        "names": _json_bytes([[row, list(names)] for row, names in table.names.items()]),
        "evicting": table.evicting,
    }
    for name in _COLUMNS:
        arrays[name] = getattr(table, name)[:high]
    return {**(extras or {}), **arrays}


def table_from_arrays(arrays: dict[str, npt.NDArray[Any]]) -> tuple[PeerTable, CheckpointInfo]:
    """The table and info table_arrays wrote. Raises CheckpointError on a foreign format."""
    header = _from_json_bytes(arrays["header"])
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {header.get('format')!r} is not "
                              f"{FORMAT_VERSION}")
    info = CheckpointInfo(float(header["written_at"]), str(header["dataset"]),
                          str(header["digest"]), str(header["mode"]))
    table = PeerTable(start=int(header["start"]), track_created=bool(header["track_created"]))
    rates = header["rates"]
    table.rates = GlobalRates(start=int(rates.pop("start")))
    for field, value in rates.items():
        setattr(table.rates, field, value)
    table.others = Others(**header["others"])
    table._source_totals = Totals(**header["source_totals"])
    table._totals_base = Totals(**header["totals_base"])
    live = arrays["live"].astype(np.bool_)
    saved_rows = np.flatnonzero(live)
    rows = table.rows_of(np.ascontiguousarray(arrays["keys"][live]), table.start)
    for name in _COLUMNS:
        getattr(table, name)[rows] = arrays[name][live]
    table.listed_count = int(table.listed[rows].sum())
    new_row = dict(zip(saved_rows.tolist(), rows.tolist(), strict=True))
    if "evicting" in arrays and len(arrays["evicting"]):
        moved = np.full(len(live), -1, dtype=np.int64)
        moved[saved_rows] = rows
        evicting = moved[arrays["evicting"].astype(np.int64)]
        table.evicting = evicting[evicting >= 0]
    table.names = {new_row[row]: tuple(names)
                   for row, names in _from_json_bytes(arrays["names"])}
    if table.track_created:
        # Peers the old run had not named yet: ask again (the old run's queue is gone).
        unnamed = rows[table.listed[rows] & (table.T[rows] == 0)]
        if len(unnamed):
            table._created.append(unnamed.astype(np.int32))
    return table, info


def copied_arrays(table: PeerTable, info: CheckpointInfo, extras: Extras | None = None
                  ) -> dict[str, npt.NDArray[Any]]:
    """table_arrays as copies, for a writer on another thread while the table goes on
    (about 130 B a row the index handed out: some 0.1 s at 1 M peers). Pure."""
    return {name: array.copy() for name, array in table_arrays(table, info, extras).items()}


def save(path: Path, table: PeerTable, info: CheckpointInfo, mode: int = 0o600,
         extras: Extras | None = None) -> float:
    """Write the checkpoint of table atomically (save_arrays); return the seconds it took."""
    return save_arrays(path, table_arrays(table, info, extras), mode)


def save_arrays(path: Path, arrays: dict[str, npt.NDArray[Any]], mode: int = 0o600) -> float:
    """Write a checkpoint's members (table_arrays) atomically; return the seconds it took.

    Scratch file beside path (mkstemp: O_EXCL, never through a planted link),
    fsync, rename over path, fsync of the directory. On any error the scratch
    file goes and the error (OSError) is raised; the previous checkpoint stays.
    """
    started = time.perf_counter()
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)  # type: ignore[arg-type]
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(scratch, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
    return time.perf_counter() - started


def load(path: Path, extras: Extras | None = None) -> tuple[PeerTable, CheckpointInfo] | None:
    """The table and info of the checkpoint at path; None when there is none. The members
    that are not the table's go into extras, when given.

    Raises CheckpointError (one line) when the file is there but cannot be read."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from exc
    if extras is not None:
        extras.update((name, array) for name, array in arrays.items()
                      if name not in _TABLE_MEMBERS)
    try:
        return table_from_arrays(arrays)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc!r})") from exc


def read_header(path: Path) -> tuple[CheckpointInfo, Totals] | None:
    """What the checkpoint at path says about itself and the source's cumulative totals it
    was taken against, reading nothing else of it; None when there is none or it cannot be
    read (load says why)."""
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as archive:
            header = _from_json_bytes(archive["header"])
        info = CheckpointInfo(float(header["written_at"]), str(header["dataset"]),
                              str(header["digest"]), str(header["mode"]))
        return info, Totals(**header["source_totals"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        return None


def scratch_files(path: Path) -> list[Path]:
    """Scratch files a killed writer of path left (only the instance's owner removes them)."""
    return list(path.parent.glob(f".{path.name}.*"))


def rebase(table: PeerTable) -> None:
    """The source's counters start from zero again (new kernel maps after a reboot, a new
    capture): forget the last-read values so that everything the source reads from now
    on counts, and keep the totals continuous."""
    table.source[:] = 0
    base, current = table._totals_base, table._source_totals
    table._totals_base = Totals(
        packets=base.packets - current.packets, bytes=base.bytes - current.bytes,
        filtered_out=base.filtered_out - current.filtered_out,
        unparsed=base.unparsed - current.unparsed,
        unattributed=base.unattributed - current.unattributed,
        overflow=base.overflow - current.overflow, dropped=base.dropped - current.dropped,
        out_packets=base.out_packets - current.out_packets,
        out_bytes=base.out_bytes - current.out_bytes)
    table._source_totals = Totals(unknown=current.unknown)
