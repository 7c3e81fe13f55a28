"""libpcap through ctypes: compile a filter to classic BPF, and libpcap's own verdict.

Compiling on a dead DLT_EN10MB handle, as `tcpdump -r` does, makes libpcap
test VLAN tags in the packet bytes rather than through Linux ancillary loads
that only a live socket filter can run. Host names resolve inside
pcap_compile exactly as they do for tcpdump.
"""

from __future__ import annotations

import ctypes as ct
import ctypes.util
from functools import cache

from ncebpf.errors import NcebpfError, UsageError
from ncebpf.filter.cbpf import Insn

DLT_EN10MB = 1
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SNAPLEN = 262144  # libpcap's and tcpdump's maximum: a match returns this


class FilterSyntaxError(UsageError):
    """libpcap rejected the expression; the message is libpcap's own."""


class _Insn(ct.Structure):
    _fields_ = [("code", ct.c_ushort), ("jt", ct.c_ubyte), ("jf", ct.c_ubyte),
                ("k", ct.c_uint32)]


class _Program(ct.Structure):
    _fields_ = [("bf_len", ct.c_uint), ("bf_insns", ct.POINTER(_Insn))]


@cache
def _lib() -> ct.CDLL:
    name = ctypes.util.find_library("pcap") or "libpcap.so.0.8"
    try:
        lib = ct.CDLL(name)
    except OSError as exc:
        raise NcebpfError("libpcap is missing: install it with 'apt-get install libpcap0.8'") \
            from exc
    lib.pcap_open_dead.restype = ct.c_void_p
    lib.pcap_open_dead.argtypes = [ct.c_int, ct.c_int]
    lib.pcap_compile.argtypes = [ct.c_void_p, ct.POINTER(_Program), ct.c_char_p, ct.c_int,
                                 ct.c_uint32]
    lib.pcap_geterr.restype = ct.c_char_p
    lib.pcap_geterr.argtypes = [ct.c_void_p]
    lib.pcap_freecode.argtypes = [ct.POINTER(_Program)]
    lib.pcap_close.argtypes = [ct.c_void_p]
    lib.bpf_filter.argtypes = [ct.POINTER(_Insn), ct.c_char_p, ct.c_uint, ct.c_uint]
    lib.bpf_filter.restype = ct.c_uint
    return lib


def compile_filter(expression: str, netmask: int = PCAP_NETMASK_UNKNOWN) -> tuple[Insn, ...]:
    """Classic BPF for expression, optimised as tcpdump does; netmask serves `ip broadcast`."""
    lib = _lib()
    handle = lib.pcap_open_dead(DLT_EN10MB, SNAPLEN)
    program = _Program()
    try:
        if lib.pcap_compile(handle, ct.byref(program), expression.encode(), 1, netmask) != 0:
            message = (lib.pcap_geterr(handle) or b"").decode(errors="replace")
            raise FilterSyntaxError(f"bad filter {expression!r}: {message}")
        try:
            return tuple(Insn(program.bf_insns[i].code, program.bf_insns[i].jt,
                              program.bf_insns[i].jf, program.bf_insns[i].k)
                         for i in range(program.bf_len))
        finally:
            lib.pcap_freecode(ct.byref(program))
    finally:
        lib.pcap_close(handle)


def pcap_verdict(insns: tuple[Insn, ...], frame: bytes, wire_len: int | None = None) -> int:
    """What libpcap's interpreter returns for frame: 0 = no match, else the snap length."""
    program = (_Insn * len(insns))(*(_Insn(*insn) for insn in insns))
    return int(_lib().bpf_filter(program, frame, wire_len if wire_len is not None else len(frame),
                                 len(frame)))
