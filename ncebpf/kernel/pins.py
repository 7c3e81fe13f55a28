"""Counting maps pinned in bpffs, one directory per instance: what outlives a daemon.

The programs count into maps pinned at <bpffs>/ncebpf/<name>/ (bpf/ncebpf.c,
NCEBPF_PIN_DIR): `peers`, `totals` and `dataset_meta`. A daemon that ends
with `stop --keep`, `restart` or a crash leaves the programs attached and the
maps pinned; the next one compiles against the same pins and counts on
(issue 13, items 1 and 2). The maps that say which addresses are local are
not pinned: each daemon fills its own before its programs replace the old
ones, so the old programs never see them half written.

`dataset_meta` says whether the pinned maps can be used: its layout, a random
id naming the data set (the checkpoint names it too) and a digest of what
defines the data set (dataset_digest). BCC reuses a pinned map without
checking its sizes, so a daemon whose digest differs removes the old pins
before it compiles: its programs then count into new maps, and the old ones
go when the old programs are replaced.
"""

from __future__ import annotations

import ctypes as ct
import ctypes.util
import hashlib
import json
import logging
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from ncebpf.errors import KernelError, NcebpfError, UsageError
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import BuildOptions, LoadedPrograms

log = logging.getLogger(__name__)

DEFAULT_BPFFS = Path("/sys/fs/bpf")
DATASET_LAYOUT = 1  # NCEBPF_DATASET_LAYOUT in bpf/ncebpf_kern_user.h
# Bump when struct peer_key, struct peer_counters, struct total_counters or the totals
# slots change meaning: pinned maps of another value layout start a new data set.
VALUE_LAYOUT = 2  # 2: {in, out} x {packets, bytes} per CPU (issue 13, item 3)
_META = struct.Struct("=IIQ32s")  # struct dataset_meta
PINNED_MAPS = ("peers", "totals", "dataset_meta")


def pin_dir(bpffs: Path, name: str) -> Path:
    """Where instance `name` pins its maps: <bpffs>/ncebpf/<name>."""
    return bpffs / "ncebpf" / name


def dataset_digest(options: BuildOptions, filter_text: str) -> str:
    """Hex SHA-256 of what defines a data set: the filter (its text and translation),
    the payload search, the peer map's size, the frame type and the value layout.
    Pure. Two runs with the same digest count the same frames into maps of the
    same shape, so the second may take over the first's maps."""
    payload = options.payload
    defining = {
        "value_layout": VALUE_LAYOUT, "filter": filter_text,
        "translation": options.filter.c_source if options.filter else "",
        "max_peers": options.max_peers, "raw_ip": options.raw_ip,
        "payload": None if payload is None else [payload.match.hex(), payload.nomatch.hex(),
                                                 payload.payload, payload.snaplen],
    }
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()


def _mounted_bpffs(path: Path) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(fields[1] == str(path) and fields[2] == "bpf"
                   for fields in (line.split() for line in mounts) if len(fields) > 2)


def ensure_bpffs(path: Path) -> None:
    """Mount a bpf file system at path unless one is there, and leave it mounted
    (other tools pin there too). Says so in one log line. Raises NcebpfError."""
    if _mounted_bpffs(path):
        return
    if not path.is_dir():
        raise UsageError(f"{path} is no directory for the bpf file system: give --bpffs a "
                         "directory (default /sys/fs/bpf)")
    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"bpf", str(path).encode(), b"bpf", 0, None) != 0:
        code = ct.get_errno()
        raise NcebpfError(f"cannot mount the bpf file system at {path}: {os.strerror(code)}; "
                          f"mount it ('mount -t bpf bpf {path}') or give --bpffs")
    log.info("mounted the bpf file system at %s for ncebpf's pinned maps (left mounted)", path)


@dataclass(frozen=True)
class DatasetMeta:
    layout: int
    id: int  # 0: new maps, nothing counted into them yet
    digest: str  # hex

    @property
    def name(self) -> str:
        return f"{self.id:016x}"


def _read_meta_fd(fd: int) -> DatasetMeta:
    value = ct.create_string_buffer(_META.size)
    if not libbpf.map_lookup(fd, struct.pack("=I", 0), value):
        return DatasetMeta(0, 0, "")
    layout, _, ident, digest = _META.unpack(value.raw)
    return DatasetMeta(layout, ident, digest.hex() if ident else "")


def read_meta(directory: Path) -> DatasetMeta | None:
    """The pinned maps' meta; None when nothing usable is pinned there."""
    try:
        fd = libbpf.obj_get(str(directory / "dataset_meta"))
    except KernelError:
        return None
    if fd is None:
        return None
    try:
        return _read_meta_fd(fd)
    finally:
        os.close(fd)


def prepare(directory: Path, digest: str) -> None:
    """Before the compile: keep the pins in directory if they are of this data set,
    else remove them (one log line). Makes the directory."""
    if directory.is_dir() and any(directory.iterdir()):
        meta = read_meta(directory)
        if meta is None or meta.layout != DATASET_LAYOUT or (meta.id and meta.digest != digest):
            why = "of another map layout" if meta is None or meta.layout != DATASET_LAYOUT \
                else "of another filter, payload search, --max-peers or value layout"
            log.warning("the maps pinned in %s are %s: starting a new data set (the programs "
                        "attached now count on until the new ones replace them)", directory, why)
            unpin(directory)
    directory.mkdir(parents=True, exist_ok=True)


def claim(programs: LoadedPrograms, digest: str) -> tuple[DatasetMeta, bool]:
    """After the compile: the data set the maps hold, and whether it is new (the maps
    were made by this compile). A new one gets its id and digest written."""
    table = programs.table("dataset_meta")
    meta = _read_meta_fd(table.map_fd)
    if meta.id:
        return meta, False
    meta = DatasetMeta(DATASET_LAYOUT, secrets.randbits(63) | 1, digest)
    libbpf.map_update(table.map_fd, struct.pack("=I", 0),
                      _META.pack(meta.layout, 0, meta.id, bytes.fromhex(digest)))
    return meta, True


def unpin(directory: Path) -> bool:
    """Remove the pins in directory, the directory, and <bpffs>/ncebpf when it is left
    empty; True when there was something. Maps still used by attached programs live
    on until those go."""
    if not directory.is_dir():
        return False
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()
    try:
        directory.parent.rmdir()
    except OSError:
        pass  # other instances' directories
    return True
