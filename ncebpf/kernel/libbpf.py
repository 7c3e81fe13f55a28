"""The few bpf(2) operations ncebpf needs beyond BCC, through the system libbpf.

BCC's own wrappers cannot replace an XDP program atomically, detach only a
given program, read a program's name by id, or batch-read into flat buffers;
libbpf (``libbpf1``, a dependency of BCC's Debian package) can. Every
function raises KernelError with the errno on failure.
"""

from __future__ import annotations

import ctypes as ct
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from ncebpf.errors import KernelError

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4

# enum from uapi/linux/if_link.h
XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(1, 5)
ATTACH_MODE_NAMES = {
    XDP_ATTACHED_DRV: "native",
    XDP_ATTACHED_SKB: "generic",
    XDP_ATTACHED_HW: "offload",
    XDP_ATTACHED_MULTI: "multi",
}


class _XdpAttachOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("old_prog_fd", ct.c_int)]


class _XdpQueryOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("prog_id", ct.c_uint32),
        ("drv_prog_id", ct.c_uint32),
        ("hw_prog_id", ct.c_uint32),
        ("skb_prog_id", ct.c_uint32),
        ("attach_mode", ct.c_uint8),
    ]


class _TestRunOpts(ct.Structure):
    _fields_ = [
        ("sz", ct.c_size_t),
        ("data_in", ct.c_void_p),
        ("data_out", ct.c_void_p),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("ctx_in", ct.c_void_p),
        ("ctx_out", ct.c_void_p),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("repeat", ct.c_int),
        ("duration", ct.c_uint32),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
    ]


# struct bpf_prog_info offsets (uapi/linux/bpf.h): type@0, id@4, tag[8]@8, xlated_prog_len@20,
# name[16]@64
_PROG_INFO_SIZE = 232


@cache
def _lib() -> ct.CDLL:
    try:
        lib = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise KernelError(
            "libbpf.so.1 is missing: install it with 'apt-get install libbpf1'"
        ) from exc
    lib.bpf_xdp_attach.argtypes = [ct.c_int, ct.c_int, ct.c_uint32, ct.POINTER(_XdpAttachOpts)]
    lib.bpf_xdp_detach.argtypes = [ct.c_int, ct.c_uint32, ct.POINTER(_XdpAttachOpts)]
    lib.bpf_xdp_query.argtypes = [ct.c_int, ct.c_int, ct.POINTER(_XdpQueryOpts)]
    lib.bpf_prog_get_fd_by_id.argtypes = [ct.c_uint32]
    lib.bpf_obj_get_info_by_fd.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    lib.bpf_map_lookup_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_void_p,
                                         ct.c_void_p, ct.POINTER(ct.c_uint32), ct.c_void_p]
    lib.bpf_map_update_batch.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p,
                                         ct.POINTER(ct.c_uint32), ct.c_void_p]
    lib.bpf_map_lookup_and_delete_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_update_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64]
    lib.bpf_map_delete_elem.argtypes = [ct.c_int, ct.c_void_p]
    lib.bpf_prog_test_run_opts.argtypes = [ct.c_int, ct.POINTER(_TestRunOpts)]
    lib.bpf_map_get_next_key.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_lookup_elem.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    lib.bpf_map_create.argtypes = [ct.c_int, ct.c_char_p, ct.c_uint32, ct.c_uint32, ct.c_uint32,
                                   ct.c_void_p]
    lib.libbpf_probe_bpf_helper.argtypes = [ct.c_int, ct.c_int, ct.c_void_p]
    lib.libbpf_num_possible_cpus.argtypes = []
    lib.bpf_obj_get.argtypes = [ct.c_char_p]
    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    return lib


def _check(result: int, what: str) -> int:
    if result < 0:
        code = -result
        raise KernelError(f"{what}: {os.strerror(code)}", code)
    return result


@dataclass(frozen=True)
class XdpState:
    prog_id: int  # 0 when nothing is attached
    mode: str  # native, generic, offload, multi or "" when nothing is attached


def xdp_query(ifindex: int) -> XdpState:
    opts = _XdpQueryOpts(sz=ct.sizeof(_XdpQueryOpts))
    _check(_lib().bpf_xdp_query(ifindex, 0, ct.byref(opts)), f"query XDP on ifindex {ifindex}")
    prog_id = opts.prog_id or opts.drv_prog_id or opts.skb_prog_id or opts.hw_prog_id
    return XdpState(prog_id, ATTACH_MODE_NAMES.get(opts.attach_mode, ""))


def xdp_attach(ifindex: int, prog_fd: int, flags: int, old_prog_fd: int | None = None) -> None:
    """Attach; with old_prog_fd, only if that program is still the one attached."""
    opts = _XdpAttachOpts(sz=ct.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd or 0)
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
    _check(_lib().bpf_xdp_attach(ifindex, prog_fd, flags, ct.byref(opts)), "attach XDP")


def xdp_detach(ifindex: int, flags: int, expected_prog_fd: int) -> None:
    """Detach the XDP program only if it is still expected_prog_fd's program."""
    xdp_attach(ifindex, -1, flags, old_prog_fd=expected_prog_fd)


@dataclass(frozen=True)
class ProgInfo:
    id: int
    type: int
    tag: str
    name: str
    xlated_insns: int  # eBPF instructions after the verifier's rewrites


def prog_fd_by_id(prog_id: int) -> int:
    return _check(_lib().bpf_prog_get_fd_by_id(prog_id), f"open BPF program id {prog_id}")


def prog_info_by_fd(fd: int) -> ProgInfo:
    buf = (ct.c_ubyte * _PROG_INFO_SIZE)()
    size = ct.c_uint32(_PROG_INFO_SIZE)
    _check(_lib().bpf_obj_get_info_by_fd(fd, buf, ct.byref(size)), "read BPF program info")
    raw = bytes(buf)
    return ProgInfo(
        id=int.from_bytes(raw[4:8], "little"),
        type=int.from_bytes(raw[0:4], "little"),
        tag=raw[8:16].hex(),
        name=raw[64:80].split(b"\0")[0].decode(errors="replace"),
        xlated_insns=int.from_bytes(raw[20:24], "little") // 8,
    )


def prog_info_by_id(prog_id: int) -> ProgInfo:
    fd = prog_fd_by_id(prog_id)
    try:
        return prog_info_by_fd(fd)
    finally:
        os.close(fd)


def map_lookup_batches(map_fd: int, keys: ct.Array[ct.c_char], values: ct.Array[ct.c_char],
                       key_size: int, value_size: int) -> Iterator[int]:
    """Read the whole map in chunks that fill keys/values; yield each chunk's entry count.

    The buffers are reused: consume a chunk before asking for the next one.
    Separate in/out batch tokens: BCC 0.26 shares one object for both, which
    only works when the first call reads the whole map.
    """
    lib = _lib()
    capacity = len(keys) // key_size
    in_batch, out_batch = ct.c_uint64(0), ct.c_uint64(0)
    first = True
    while True:
        count = ct.c_uint32(capacity)
        result = lib.bpf_map_lookup_batch(map_fd, None if first else ct.byref(in_batch),
                                          ct.byref(out_batch), keys, values, ct.byref(count),
                                          None)
        if result < 0 and result != -errno.ENOENT:
            _check(result, "batch-read a BPF map")
        if count.value:
            yield count.value
        if result == -errno.ENOENT:
            return
        in_batch.value = out_batch.value
        first = False


def map_lookup_key_by_key(map_fd: int, keys: ct.Array[ct.c_char], values: ct.Array[ct.c_char],
                          key_size: int, value_size: int) -> Iterator[int]:
    """map_lookup_batches without BPF_MAP_LOOKUP_BATCH (kernels before 5.6).

    Same chunks, same buffers, two syscalls an entry (BPF_MAP_GET_NEXT_KEY,
    BPF_MAP_LOOKUP_ELEM) instead of two a chunk. The walk restarts from the
    first key if the key it stands on is deleted meanwhile; only the
    collector deletes, and never during a read, so each key comes once.
    An entry deleted between its two calls is skipped.
    """
    lib = _lib()
    capacity = len(keys) // key_size
    current = ct.create_string_buffer(key_size)
    following = ct.create_string_buffer(key_size)
    first = True
    count = 0
    while True:
        result = lib.bpf_map_get_next_key(map_fd, None if first else current, following)
        if result == -errno.ENOENT:
            break
        _check(result, "walk the keys of a BPF map")
        first = False
        ct.memmove(current, following, key_size)
        result = lib.bpf_map_lookup_elem(map_fd, current,
                                         ct.addressof(values) + count * value_size)
        if result == -errno.ENOENT:
            continue
        _check(result, "read a BPF map entry")
        ct.memmove(ct.addressof(keys) + count * key_size, current, key_size)
        count += 1
        if count == capacity:
            yield count
            count = 0
    if count:
        yield count


def map_lookup(map_fd: int, key: bytes, value: ct.Array[ct.c_char]) -> bool:
    """Read one entry into value; False when it is not there."""
    result = _lib().bpf_map_lookup_elem(map_fd, key, value)
    if result == -errno.ENOENT:
        return False
    _check(result, "read a BPF map entry")
    return True


def map_update_batch(map_fd: int, keys: ct.Array[ct.c_char], values: ct.Array[ct.c_char],
                     count: int) -> None:
    n = ct.c_uint32(count)
    _check(_lib().bpf_map_update_batch(map_fd, keys, values, ct.byref(n), None),
           "batch-update a BPF map")


def map_lookup_and_delete(map_fd: int, key: bytes, value: ct.Array[ct.c_char]) -> bool:
    """Atomically read and remove one entry; False when it is not there."""
    result = _lib().bpf_map_lookup_and_delete_elem(map_fd, key, value)
    if result == -errno.ENOENT:
        return False
    _check(result, "read-and-delete a BPF map entry")
    return True


def map_update(map_fd: int, key: bytes, value: bytes) -> None:
    _check(_lib().bpf_map_update_elem(map_fd, key, value, 0), "update a BPF map entry")


def map_delete(map_fd: int, key: bytes) -> bool:
    result = _lib().bpf_map_delete_elem(map_fd, key)
    if result == -errno.ENOENT:
        return False
    _check(result, "delete a BPF map entry")
    return True


def map_create(map_type: int, name: bytes, key_size: int, value_size: int,
               max_entries: int) -> int:
    """BPF_MAP_CREATE with default options; the caller closes the fd."""
    return _check(_lib().bpf_map_create(map_type, name, key_size, value_size, max_entries, None),
                  "create a BPF map")


def obj_get(path: str) -> int | None:
    """An fd of the BPF object pinned at path (bpffs); None when nothing is pinned there."""
    result = _lib().bpf_obj_get(path.encode())
    if result == -errno.ENOENT:
        return None
    return _check(result, f"open the pinned BPF object {path}")


def obj_pin(fd: int, path: str) -> None:
    """Pin the BPF object fd at path, in a bpf file system (BPF_OBJ_PIN). KernelError with the
    errno on failure: EROFS on a read-only mount, EACCES/EPERM without write access, EEXIST."""
    _check(_lib().bpf_obj_pin(fd, path.encode()), f"pin a BPF object at {path}")


def possible_cpus() -> int:
    """The CPU count per-CPU map values carry one copy for."""
    return _check(_lib().libbpf_num_possible_cpus(), "count the possible CPUs")


def probe_helper(prog_type: int, helper_id: int) -> bool:
    """Whether the kernel lets a program of prog_type call the helper (libbpf loads a tiny one).

    Raises KernelError when the probe itself fails (no privileges, an
    unknown program type), as opposed to the helper being absent.
    """
    result = _lib().libbpf_probe_bpf_helper(prog_type, helper_id, None)
    _check(result, f"probe BPF helper {helper_id} in program type {prog_type}")
    return bool(result == 1)


@dataclass(frozen=True)
class TestRun:
    retval: int
    duration_ns: int  # mean per repetition, measured by the kernel


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> TestRun:
    """BPF_PROG_TEST_RUN: run a program on one frame `repeat` times in the kernel."""
    data = ct.create_string_buffer(frame, len(frame))
    opts = _TestRunOpts(sz=ct.sizeof(_TestRunOpts), data_in=ct.addressof(data),
                        data_size_in=len(frame), repeat=repeat)
    _check(_lib().bpf_prog_test_run_opts(prog_fd, ct.byref(opts)), "BPF_PROG_TEST_RUN")
    return TestRun(opts.retval, opts.duration)
