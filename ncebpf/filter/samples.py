"""Sample frames for a filter's self-check, seeded with the filter's own constants. Pure.

Random frames rarely match a specific filter, so a check on them proves
little. We read the constants the filter compares loaded values with —
addresses from 4-byte loads, ports and EtherTypes from 2-byte loads,
protocols from 1-byte loads — and build frames that carry them, plus the
usual suspects: VLAN tags, IP options, IPv6, ARP, truncated frames.
"""

from __future__ import annotations

import ipaddress
import itertools

from ncebpf.filter import cbpf
from ncebpf.filter.cbpf import Insn
from ncebpf.filter.frames import ETH_P_ARP, arp_request, ethernet, ip_frame

DEFAULT_V4 = ("10.77.0.1", "10.77.0.2")
DEFAULT_V6 = ("fd77::1", "fd77::2")
DEFAULT_PORTS = (53, 80)
ETHERTYPES = {0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8}
MAX_FRAMES = 400


def _constants(insns: tuple[Insn, ...]) -> tuple[list[int], list[int]]:
    """(4-byte constants, 2-byte constants) compared against loads of that width."""
    words: list[int] = []
    halves: list[int] = []
    width = 0
    for code, _, _, k in insns:
        c = cbpf.cls(code)
        if c == cbpf.LD and cbpf.mode(code) in (cbpf.ABS, cbpf.IND):
            width = cbpf.SIZE_BYTES.get(cbpf.size(code), 0)
        elif c == cbpf.JMP and cbpf.op(code) in (cbpf.JEQ, cbpf.JGT, cbpf.JGE):
            target = words if width == 4 else halves if width == 2 else None
            if target is not None and k not in target:
                target.append(k)
    return words, halves


def sample_frames(insns: tuple[Insn, ...]) -> list[bytes]:
    words, halves = _constants(insns)
    v4 = list(dict.fromkeys([*(str(ipaddress.IPv4Address(w)) for w in words[:6]), *DEFAULT_V4]))
    ports = [h for h in halves if h not in ETHERTYPES][:6]
    ports = list(dict.fromkeys([*ports, *DEFAULT_PORTS]))
    frames: list[bytes] = []
    for src, dst in itertools.permutations(v4, 2):
        for kind in ("udp", "tcp"):
            for port in ports:
                frames.append(ip_frame(src, dst, kind, 8, dport=port))
                frames.append(ip_frame(src, dst, kind, 8, sport=port))
        frames.append(ip_frame(src, dst, "icmp", 8))
        frames.append(ip_frame(src, dst, "udp", 8, vlans=(10,), dport=ports[0]))
        frames.append(ip_frame(src, dst, "tcp", 8, options=bytes([1] * 8), dport=ports[0]))
    for src, dst in itertools.permutations(DEFAULT_V6, 2):
        for kind in ("udp", "tcp"):
            for port in ports:
                frames.append(ip_frame(src, dst, kind, 8, dport=port))
        frames.append(ip_frame(src, dst, "icmp", 8))
    frames.append(ethernet(arp_request(), ETH_P_ARP))
    # XDP test runs take no frame shorter than an Ethernet header (14 bytes).
    frames += [frame[:cut] for frame in frames[:8] for cut in (14, 20, 34, 40)]
    return frames[:MAX_FRAMES]
