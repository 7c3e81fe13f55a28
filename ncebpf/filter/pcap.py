"""libpcap through ctypes: compile a filter to classic BPF, and libpcap's own verdict.

Compiling on a dead handle of the interface's link type, as `tcpdump -r`
does (DLT_EN10MB on Ethernet, DLT_RAW where frames start at the IP header),
makes libpcap test VLAN tags in the packet bytes rather than through Linux
ancillary loads that only a live socket filter can run. Host names resolve
inside pcap_compile exactly as they do for tcpdump.
"""

from __future__ import annotations

import ctypes as ct
from collections.abc import Iterator
from contextlib import contextmanager

from ncebpf.errors import UsageError
from ncebpf.filter.cbpf import Insn
from ncebpf.libpcap import BpfInsn, BpfProgram, lib

DLT_EN10MB = 1
DLT_RAW = 12  # raw IPv4 or IPv6, no link-layer header (libpcap's value on Linux)
DLT_IPV4, DLT_IPV6 = 228, 229  # the same, one family only
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
SNAPLEN = 262144  # libpcap's and tcpdump's maximum: a match returns this


class FilterSyntaxError(UsageError):
    """libpcap rejected the expression; the message is libpcap's own."""


@contextmanager
def compiled(handle: int, expression: str, netmask: int) -> Iterator[BpfProgram]:
    """expression compiled on a libpcap handle (dead or live), freed afterwards."""
    pcap = lib()
    program = BpfProgram()
    if pcap.pcap_compile(handle, ct.byref(program), expression.encode(), 1, netmask) != 0:
        message = (pcap.pcap_geterr(handle) or b"").decode(errors="replace")
        raise FilterSyntaxError(f"bad filter {expression!r}: {message}")
    try:
        yield program
    finally:
        pcap.pcap_freecode(ct.byref(program))


def compile_filter(expression: str, netmask: int = PCAP_NETMASK_UNKNOWN,
                   dlt: int = DLT_EN10MB) -> tuple[Insn, ...]:
    """Classic BPF for expression on link type dlt, optimised as tcpdump does; netmask
    serves `ip broadcast`. Raises FilterSyntaxError (exit 2), also for a filter that
    makes no sense on the link type (`ether host` on DLT_RAW)."""
    handle = lib().pcap_open_dead(dlt, SNAPLEN)
    try:
        with compiled(handle, expression, netmask) as program:
            return tuple(Insn(program.bf_insns[i].code, program.bf_insns[i].jt,
                              program.bf_insns[i].jf, program.bf_insns[i].k)
                         for i in range(program.bf_len))
    finally:
        lib().pcap_close(handle)


def bpf_program(insns: tuple[Insn, ...]) -> BpfProgram:
    """A libpcap program holding insns, for pcap_offline_filter; the caller keeps it alive."""
    program = BpfProgram()
    program.bf_len = len(insns)
    # ctypes keeps the array alive in the structure (its _objects) once assigned.
    program.bf_insns = (BpfInsn * len(insns))(*(BpfInsn(*insn) for insn in insns))
    return program


def pcap_verdict(insns: tuple[Insn, ...], frame: bytes, wire_len: int | None = None) -> int:
    """What libpcap's interpreter returns for frame: 0 = no match, else the snap length."""
    program = (BpfInsn * len(insns))(*(BpfInsn(*insn) for insn in insns))
    return int(lib().bpf_filter(program, frame, wire_len if wire_len is not None else len(frame),
                                len(frame)))
