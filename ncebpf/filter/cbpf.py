"""Classic BPF instructions: encoding, names, and a tcpdump -d style listing. Pure."""

from __future__ import annotations

from typing import NamedTuple

# Instruction classes, sizes, modes, operations (linux/filter.h, pcap/bpf.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
RVAL_K, RVAL_X, RVAL_A = 0x00, 0x08, 0x10
TAX, TXA = 0x00, 0x80

SIZE_BYTES = {W: 4, H: 2, B: 1}
MEMWORDS = 16

# Offsets at or above this are Linux extensions (SKF_AD_OFF = -0x1000 and the
# SKF_NET_OFF/SKF_LL_OFF ranges below it), not packet bytes.
LINUX_EXTENSION_BASE = 0xFFE00000
SKF_AD_OFF = 0xFFFFF000
ANCILLARY = {
    0: "the packet's protocol (skb->protocol)", 4: "the packet type (inbound/outbound)",
    8: "the interface index (ifindex)", 12: "netlink attributes", 16: "nested netlink attributes",
    20: "the packet mark", 24: "the queue mapping", 28: "the device type",
    32: "the receive hash", 36: "the CPU number", 40: "the alu-xor extension",
    44: "the VLAN tag in metadata (vlan_tci)", 48: "the VLAN-tag-present flag",
    52: "the payload offset", 56: "a random number", 60: "the VLAN TPID",
}


def cls(code: int) -> int:
    return code & 0x07


def size(code: int) -> int:
    return code & 0x18


def mode(code: int) -> int:
    return code & 0xE0


def op(code: int) -> int:
    return code & 0xF0


def src(code: int) -> int:
    return code & 0x08


class Insn(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


_ALU_NAMES = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and",
              LSH: "lsh", RSH: "rsh", MOD: "mod", XOR: "xor"}
_JMP_NAMES = {JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset"}
_SIZE_SUFFIX = {W: "", H: "h", B: "b"}


def describe(insn: Insn, pc: int) -> str:
    """One instruction the way `tcpdump -d` prints it."""
    code, jt, jf, k = insn
    c = cls(code)
    if c in (LD, LDX):
        reg = "ld" if c == LD else "ldx"
        m = mode(code)
        suffix = _SIZE_SUFFIX.get(size(code), "?")
        if m == IMM:
            return f"{reg} #{k:#x}" if k > 0xFFFF else f"{reg} #{k}"
        if m == LEN:
            return f"{reg} #pktlen"
        if m == MEM:
            return f"{reg} M[{k}]"
        if m == ABS:
            return f"{reg}{suffix} [{k}]"
        if m == IND:
            return f"{reg}{suffix} [x + {k}]"
        if m == MSH:
            return f"ldxb 4*([{k}]&0xf)"
    if c == ST:
        return f"st M[{k}]"
    if c == STX:
        return f"stx M[{k}]"
    if c == ALU:
        if op(code) == NEG:
            return "neg"
        operand = "x" if src(code) == X else f"#{k:#x}"
        return f"{_ALU_NAMES.get(op(code), '?')} {operand}"
    if c == JMP:
        if op(code) == JA:
            return f"ja {pc + 1 + k}" if k < 0x80000000 else f"ja {pc + 1 + k - (1 << 32)}"
        operand = "x" if src(code) == X else f"#{k:#x}"
        return f"{_JMP_NAMES.get(op(code), '?')} {operand} jt {pc + 1 + jt} jf {pc + 1 + jf}"
    if c == RET:
        rval = code & 0x18
        return "ret a" if rval == RVAL_A else ("ret x" if rval == RVAL_X else f"ret #{k}")
    if c == MISC:
        return "tax" if code & 0xF8 == TAX else "txa"
    return f"unknown {code:#x}"


def extension_read(k: int) -> str | None:
    """What a packet load at offset k reads when k is a Linux extension; None for packet bytes."""
    if k < LINUX_EXTENSION_BASE:
        return None
    if k >= SKF_AD_OFF:
        return ANCILLARY.get(k - SKF_AD_OFF) or f"Linux extension {k:#x}"
    return "a network- or link-layer-relative offset"


def socket_metadata(insns: tuple[Insn, ...]) -> str | None:
    """What the program's first Linux-extension load reads; None when it reads packet bytes only.

    libpcap emits such loads for `inbound`, `outbound`, `ifindex` (and, on a
    live Linux handle, for `vlan`). Only a Linux socket filter can run them:
    libpcap's own interpreter rejects the frame at such a load, and the
    kernel's XDP/TC hooks have no socket metadata.
    """
    for code, _, _, k in insns:
        if cls(code) in (LD, LDX) and mode(code) in (ABS, IND, MSH):
            what = extension_read(k)
            if what is not None:
                return what
    return None


def listing(insns: tuple[Insn, ...]) -> str:
    return "\n".join(f"({pc:03d}) {describe(insn, pc)}" for pc, insn in enumerate(insns))
