"""Translate classic BPF into C that the eBPF verifier accepts. Pure: no I/O.

The output is one header defining

    static __always_inline __u32 ncebpf_filter(const __u8 *data, const __u8 *data_end,
                                               __u32 wire_len, __u32 vtag)

which returns what libpcap's bpf_filter() would: 0 for no match, otherwise
the program's return value. It needs bpf/byteorder.h and the __u8.. types.

vtag is a VLAN tag the kernel keeps in metadata rather than in the packet
(rx-VLAN offload, or the stack's own untagging before TC ingress), as
TPID << 16 | TCI, or 0 for none. The filter then reads the frame as it was
on the wire, which is what libpcap hands tcpdump on a live Linux handle:
bytes 0..11 (the MAC addresses) from data, 12..15 the tag, and byte n >= 16
from data + n - 4; wire_len then includes the tag's 4 bytes. Callers that
never have such a tag (XDP) pass the constant 0 and the compiler removes
the view. Guarantees, instruction by instruction:

- A, X and the scratch words M[0..15] start at zero, as in libpcap.
- Every packet load is checked against data_end first; a load past the end
  rejects the packet (returns 0), as classic BPF does. Loads are big-endian.
- `[x + k]` loads add X and k in 64 bits (classic BPF rejects on overflow)
  and clamp the offset to a constant before touching the packet, which is
  what lets the verifier accept offsets that come from packet data.
- Division and modulo by X reject when X is 0; shifts by X of 32 or more
  give 0. Constant divisors of 0 and constant shifts >= 32 are refused here
  (libpcap never emits them).
- Jumps only go forward, so the C has no loops. A backward jump (libpcap's
  `protochain`) and the Linux extensions (`inbound`, `ifindex`, ... which
  load from negative offsets) cannot run in the kernel: UnsupportedFilter
  names the construct.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ncebpf.errors import UsageError
from ncebpf.filter import cbpf
from ncebpf.filter.cbpf import Insn

MAX_PACKET_OFFSET = 0xFFFF  # the verifier's limit on a packet offset (MAX_PACKET_OFF)
MAX_INDIRECT_OFFSET = 0xFFF0  # clamp for [x + k]: umax(offset) + size must stay <= 0xffff
MSH_MAX = 60  # 4 * (byte & 0xf)
TAG_OFFSET = 12  # an 802.1Q tag sits after the two MAC addresses
FUNCTION_NAME = re.compile(r"^[A-Za-z_][0-9A-Za-z_]*$")


class UnsupportedFilter(UsageError):
    """The filter compiles but cannot run in the kernel; the message names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"this filter cannot run in the kernel: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Translation:
    c_source: str  # the whole generated header
    function: str
    pull_len: int  # bytes of linear packet data the filter may read (TC pulls them)
    cbpf_insns: int


_ALU_C = {cbpf.ADD: "+", cbpf.SUB: "-", cbpf.MUL: "*", cbpf.OR: "|", cbpf.AND: "&",
          cbpf.XOR: "^", cbpf.DIV: "/", cbpf.MOD: "%", cbpf.LSH: "<<", cbpf.RSH: ">>"}
_JMP_C = {cbpf.JEQ: "A == {}", cbpf.JGT: "A > {}", cbpf.JGE: "A >= {}", cbpf.JSET: "A & {}"}
_LOAD_C = {1: "*(p)", 2: "ncebpf_be16(*(const __u16 *)(p))",
           4: "ncebpf_be32(*(const __u32 *)(p))"}


def _targets(insns: tuple[Insn, ...]) -> dict[int, list[int]]:
    """Successors of each instruction; raises UnsupportedFilter on a bad jump."""
    n = len(insns)
    successors: dict[int, list[int]] = {}
    for pc, (code, jt, jf, k) in enumerate(insns):
        c = cbpf.cls(code)
        if c == cbpf.RET:
            successors[pc] = []
        elif c == cbpf.JMP and cbpf.op(code) == cbpf.JA:
            if k >= 0x80000000:
                raise UnsupportedFilter(
                    f"instruction {pc} jumps backwards (libpcap emits that for 'protochain'): "
                    "the kernel path allows forward jumps only")
            successors[pc] = [pc + 1 + k]
        elif c == cbpf.JMP:
            successors[pc] = [pc + 1 + jt, pc + 1 + jf]
        else:
            successors[pc] = [pc + 1]
        if any(t >= n for t in successors[pc]):
            raise UnsupportedFilter(f"instruction {pc} runs past the end of the program")
    return successors


def _check_load(pc: int, insn: Insn) -> None:
    what = cbpf.extension_read(insn.k)
    if what is not None:
        raise UnsupportedFilter(
            f"instruction {pc} reads {what}, which only a socket filter can see "
            "(for example 'inbound', 'outbound' or 'ifindex')")


def _max_x(insns: tuple[Insn, ...]) -> int | None:
    """An upper bound of X anywhere in the program, or None when X can hold packet data."""
    bound = 0
    for code, _, _, k in insns:
        c = cbpf.cls(code)
        if c == cbpf.LDX:
            m = cbpf.mode(code)
            if m == cbpf.MSH:
                bound = max(bound, MSH_MAX)
            elif m == cbpf.IMM:
                bound = max(bound, k)
            else:
                return None
        elif c == cbpf.MISC and code & 0xF8 == cbpf.TAX:
            return None
    return bound


def pull_len(insns: tuple[Insn, ...]) -> int:
    """How many bytes from the frame's start the program may read (an upper bound).

    At most MAX_PACKET_OFFSET, which is also the answer when an indirect
    load's X can come from packet data. Backward jumps do not matter here.
    """
    furthest = 0
    x_bound = _max_x(insns)
    for code, _, _, k in insns:
        c, m = cbpf.cls(code), cbpf.mode(code)
        width = cbpf.SIZE_BYTES.get(cbpf.size(code), 1)
        if c == cbpf.LD and m == cbpf.ABS:
            furthest = max(furthest, k + width)
        elif c == cbpf.LDX and m == cbpf.MSH:
            furthest = max(furthest, k + 1)
        elif c == cbpf.LD and m == cbpf.IND:
            if x_bound is None:
                return MAX_PACKET_OFFSET
            furthest = max(furthest, x_bound + k + width)
    return min(furthest, MAX_PACKET_OFFSET)




def _through_tag(reg: str, offset: str, width: int, direct: list[str],
                 then: str = "") -> list[str]:
    """direct when no tag is in metadata, else the same load through the wire view."""
    tagged = [f"\tif (!ncebpf_tagged_load(data, data_end, vtag, {offset}, {width}, &{reg}))",
              "\t\treturn 0;"] + ([f"\t{then}"] if then else [])
    return ["if (vtag) {", *tagged, "} else {", *(f"\t{line}" for line in direct), "}"]


def _statement(pc: int, insn: Insn) -> str | list[str]:
    """C for one instruction: a statement, or lines of one."""
    code, jt, jf, k = insn
    c, m = cbpf.cls(code), cbpf.mode(code)
    width = cbpf.SIZE_BYTES.get(cbpf.size(code))
    if c in (cbpf.LD, cbpf.LDX):
        reg = "A" if c == cbpf.LD else "X"
        if m == cbpf.IMM:
            return f"{reg} = {k}u;"
        if m == cbpf.LEN:
            return f"{reg} = wire_len;"
        if m == cbpf.MEM:
            if k >= cbpf.MEMWORDS:
                raise UnsupportedFilter(f"instruction {pc} reads scratch word {k}")
            return f"{reg} = M[{k}];"
        if m == cbpf.MSH and c == cbpf.LDX:
            _check_load(pc, insn)
            if k + 1 > MAX_PACKET_OFFSET:
                return "return 0;"
            direct = ["p = data + " + str(k) + ";", "if (p + 1 > data_end)", "\treturn 0;",
                      "X = (p[0] & 0xf) << 2;"]
            if k + 1 <= TAG_OFFSET:
                return direct
            return _through_tag("X", str(k), 1, direct, "X = (X & 0xf) << 2;")
        if m in (cbpf.ABS, cbpf.IND) and c == cbpf.LD and width is not None:
            _check_load(pc, insn)
            load = _LOAD_C[width]
            if m == cbpf.ABS:
                if k + width > MAX_PACKET_OFFSET:
                    return "return 0; /* beyond any packet */"
                direct = [f"p = data + {k};", f"if (p + {width} > data_end)", "\treturn 0;",
                          f"A = {load};"]
                if k + width <= TAG_OFFSET:
                    return direct  # the MAC addresses: the same with or without a tag
                return _through_tag("A", str(k), width, direct)
            return [f"off = (__u64)X + {k}u;", f"if (off > {MAX_INDIRECT_OFFSET})", "\treturn 0;",
                    *_through_tag("A", "off", width, [
                        "p = data + off;", f"if (p + {width} > data_end)", "\treturn 0;",
                        f"A = {load};"])]
    elif c in (cbpf.ST, cbpf.STX):
        if k >= cbpf.MEMWORDS:
            raise UnsupportedFilter(f"instruction {pc} writes scratch word {k}")
        return f"M[{k}] = {'A' if c == cbpf.ST else 'X'};"
    elif c == cbpf.ALU:
        operation = cbpf.op(code)
        if operation == cbpf.NEG:
            return "A = -A;"
        symbol = _ALU_C.get(operation)
        if symbol is not None and cbpf.src(code) == cbpf.X:
            if operation in (cbpf.DIV, cbpf.MOD):
                return ["if (X == 0)", "\treturn 0;", f"A {symbol}= X;"]
            if operation in (cbpf.LSH, cbpf.RSH):
                return f"A = X < 32 ? A {symbol} X : 0;"
            return f"A {symbol}= X;"
        if symbol is not None:
            if operation in (cbpf.DIV, cbpf.MOD) and k == 0:
                raise UnsupportedFilter(f"instruction {pc} divides by the constant 0")
            if operation in (cbpf.LSH, cbpf.RSH) and k >= 32:
                raise UnsupportedFilter(f"instruction {pc} shifts by {k} bits")
            return f"A {symbol}= {k}u;"
    elif c == cbpf.JMP:
        operation = cbpf.op(code)
        if operation == cbpf.JA:
            return f"goto L{pc + 1 + k};"
        template = _JMP_C.get(operation)
        if template is not None:
            condition = template.format("X" if cbpf.src(code) == cbpf.X else f"{k}u")
            taken, fallen = pc + 1 + jt, pc + 1 + jf
            if fallen == pc + 1:
                return [f"if ({condition})", f"\tgoto L{taken};"]
            if taken == pc + 1:
                return [f"if (!({condition}))", f"\tgoto L{fallen};"]
            return [f"if ({condition})", f"\tgoto L{taken};", f"goto L{fallen};"]
    elif c == cbpf.RET:
        rval = code & 0x18
        return {cbpf.RVAL_A: "return A;", cbpf.RVAL_X: "return X;"}.get(rval, f"return {k}u;")
    elif c == cbpf.MISC and code in (cbpf.MISC | cbpf.TAX, cbpf.MISC | cbpf.TXA):
        return "X = A;" if code == cbpf.MISC | cbpf.TAX else "A = X;"
    raise UnsupportedFilter(f"instruction {pc} has an unknown opcode {code:#x}")


def _lines(statement: str | list[str]) -> list[str]:
    return [statement] if isinstance(statement, str) else statement


def translate(insns: tuple[Insn, ...], function: str = "ncebpf_filter") -> Translation:
    if not FUNCTION_NAME.match(function):
        raise ValueError(f"not a C identifier: {function!r}")
    if not insns:
        raise UnsupportedFilter("the filter program is empty")
    successors = _targets(insns)
    jump_targets = {t for pc, ts in successors.items() for t in ts if t != pc + 1}
    statements = [_lines(_statement(pc, insn)) for pc, insn in enumerate(insns)]
    uses = " ".join(line for lines in statements for line in lines)
    body = []
    for pc, lines in enumerate(statements):
        if pc in jump_targets:
            body.append(f"L{pc}:")
        body += [f"\t{line}" for line in lines]
    locals_ = ["__u32 A = 0, X = 0;"]
    if "M[" in uses:
        locals_.append(f"__u32 M[{cbpf.MEMWORDS}] = {{}};")
    if "p = " in uses:
        locals_.append("const __u8 *p;")
    if "off = " in uses:
        locals_.append("__u64 off;")
    reads = pull_len(insns)
    source = "\n".join([
        "/* Generated by ncebpf.filter.translate from libpcap's classic BPF. Do not edit. */",
        f"#define {function.upper()}_PULL_LEN {reads}",
        "",
        *(['#include "wire_view.h"', ""] if "ncebpf_tagged_load" in uses else []),
        f"static __always_inline __u32 {function}(const __u8 *data, const __u8 *data_end,",
        "\t\t\t\t\t   __u32 wire_len, __u32 vtag)",
        "{",
        *(f"\t{line}" for line in locals_),
        "",
        "\t(void)A; (void)X; (void)data; (void)data_end; (void)wire_len; (void)vtag;",
        *body,
        "}",
        "",
    ])
    return Translation(source, function, reads, len(insns))
