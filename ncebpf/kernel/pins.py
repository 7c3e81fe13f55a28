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

import contextlib
import ctypes as ct
import ctypes.util
import errno
import hashlib
import json
import logging
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ncebpf.errors import KernelError, NcebpfError
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


BPF_FS_MAGIC = 0xCAFE4A11  # include/uapi/linux/magic.h


def _on_bpffs(path: Path) -> bool:
    """Whether path is a directory on a bpf file system: its mount point or any directory
    below it (statfs(2)'s f_type, the kernel's word, bind mounts included)."""
    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buffer = ct.create_string_buffer(256)  # struct statfs: 120 bytes on 64-bit Linux
    if libc.statfs(str(path).encode(), buffer) != 0:
        return False
    # f_type, its first field, is a C long (__fsword_t) on every Linux architecture.
    return ct.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF == BPF_FS_MAGIC


class PinError(NcebpfError):
    """The counting maps cannot be pinned: bpffs is not mounted and cannot be, or the
    directory is read-only or not ours to write. `code` is the errno, `mounted` whether a
    bpf file system was there. ncebpf then counts on without pins (Daemon._count)."""

    def __init__(self, what: str, code: int, mounted: bool) -> None:
        super().__init__(what)
        self.code = code
        self.mounted = mounted


def ensure_bpffs(path: Path) -> None:
    """Make sure path is on a bpf file system: a mount of one or a directory in one. Only at
    DEFAULT_BPFFS does ncebpf mount one when absent, and leaves it mounted (other tools pin
    there too), saying so in one log line (README, "Restart, upgrade and crash"): a bpffs
    mounted over another --bpffs would hide what that directory holds, and a mount made
    under `ip netns exec` ends with the daemon, pins and all. Raises PinError."""
    if _on_bpffs(path):
        return
    if not path.is_dir():
        raise PinError(f"{path} is no directory", errno.ENOTDIR, mounted=False)
    if path != DEFAULT_BPFFS:
        raise PinError(f"{path} is not on a bpf file system, and ncebpf mounts one only at "
                       f"{DEFAULT_BPFFS}", errno.ENODEV, mounted=False)
    libc = ct.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"bpf", str(path).encode(), b"bpf", 0, None) != 0:
        code = ct.get_errno()
        raise PinError(f"no bpf file system is mounted at {path}, and mounting one failed: "
                       f"{os.strerror(code)}", code, mounted=False)
    log.info("mounted the bpf file system at %s for ncebpf's pinned maps (left mounted)", path)


_PROBE_MAP_TYPE = 2  # BPF_MAP_TYPE_ARRAY (uapi/linux/bpf.h)


def probe_pin(directory: Path) -> None:
    """Pin a one-entry array map in directory and remove the pin again: the kernel's own
    answer to whether the counting maps can be pinned there (a read-only bind mount, an
    LSM or a missing write permission all show here, and BCC, which pins them during the
    compile, would fail the whole compile). Raises KernelError or OSError."""
    fd = libbpf.map_create(_PROBE_MAP_TYPE, b"ncebpf_pinprobe", 4, 4, 1)
    probe = directory / f"probe_{os.getpid()}"  # bpffs refuses dots in names (EPERM)
    try:
        libbpf.obj_pin(fd, str(probe))
        probe.unlink()
    finally:
        os.close(fd)


def pin_fix(code: int, mounted: bool, bpffs: Path) -> str:
    """What the operator does about a PinError of errno `code`, in words. Pure.

    systemd's ProtectKernelTunables= mounts <bpffs> read-only, and a ReadWritePaths= of that
    same path loses against it (systemd.exec(5); src/core/namespace.c: of two entries for one
    path the read-only one wins), so the unit opens a directory below it instead."""
    if not mounted:
        return (f"mount one first, as root ('mount -t bpf bpf {bpffs}'; systemd does at boot), "
                "or give --bpffs a mounted bpf file system")
    if code == errno.EROFS:
        return (f"{bpffs} is read-only for ncebpf: under systemd the unit needs "
                f"ReadWritePaths=-{bpffs}/ncebpf and that directory made before the start (the "
                "shipped ncebpf@.service does both for /sys/fs/bpf; a drop-in for another bpffs)")
    if code in (errno.EACCES, errno.EPERM):
        return f"run ncebpf as root, with write access to {bpffs}"
    return "give --bpffs a bpf file system ncebpf may write"


def prepare_pinning(bpffs: Path, directory: Path, digest: str) -> None:
    """Everything before a compile with pins: bpffs mounted (ensure_bpffs), the directory
    prepared for this data set (prepare), a pin tried there (probe_pin). Raises PinError."""
    ensure_bpffs(bpffs)
    try:
        prepare(directory, digest)
        probe_pin(directory)
    except OSError as exc:
        raise PinError(f"{exc.strerror or exc}", exc.errno or 0, mounted=True) from exc
    except KernelError as exc:
        raise PinError(str(exc), exc.errno or 0, mounted=True) from exc


def unpinned_warning(directory: Path, error: PinError, bpffs: Path) -> str:
    """The one log line of a run whose maps are not pinned: what failed, what it costs,
    what to do. Pure."""
    fix = pin_fix(error.code, error.mounted, bpffs)
    return (f"cannot pin the counting maps in {directory} ({error}): counting without pins, "
            "so a restart or 'stop --keep' loses what arrives until the next start and a "
            f"crash what was counted since the last checkpoint; {fix}")


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
    with _pinned(directory / "dataset_meta") as fd:
        return None if fd is None else _read_meta_fd(fd)


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


_TOTAL_COUNTERS = struct.Struct("=QQ")  # struct total_counters: packets, bytes


@contextlib.contextmanager
def _pinned(path: Path) -> Iterator[int | None]:
    """An fd of the object pinned at path, closed afterwards; None when nothing usable is."""
    try:
        fd = libbpf.obj_get(str(path))
    except KernelError:
        fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def pinned_packets(directory: Path) -> int | None:
    """The packets the pinned `totals` map in directory counted for peers, both directions
    summed over CPUs; None when nothing is pinned there or it cannot be read."""
    from ncebpf.kernel.maps import TotalsSlot

    with _pinned(directory / "totals") as fd:
        if fd is None:
            return None
        try:
            cpus = libbpf.possible_cpus()
            value = ct.create_string_buffer(_TOTAL_COUNTERS.size * cpus)
            packets = 0
            for slot in (TotalsSlot.MATCHED_IN, TotalsSlot.MATCHED_OUT):
                if libbpf.map_lookup(fd, struct.pack("=I", slot), value):
                    packets += sum(
                        _TOTAL_COUNTERS.unpack_from(value.raw, cpu * _TOTAL_COUNTERS.size)[0]
                        for cpu in range(cpus))
            return packets
        except KernelError:
            return None


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
