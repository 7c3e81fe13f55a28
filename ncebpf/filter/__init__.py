"""tcpdump filters in the kernel: libpcap compiles to classic BPF, we translate to C."""

from __future__ import annotations

from dataclasses import dataclass

from ncebpf.filter.cbpf import Insn
from ncebpf.filter.host import local_hosts
from ncebpf.filter.pcap import DLT_EN10MB, PCAP_NETMASK_UNKNOWN, compile_filter
from ncebpf.filter.translate import Translation, translate


@dataclass(frozen=True)
class PreparedFilter:
    expression: str
    insns: tuple[Insn, ...]
    translation: Translation
    local_hosts: tuple[str, ...]  # the first `host`'s addresses: local side of the peer rule


def prepare(expression: str, netmask: int = PCAP_NETMASK_UNKNOWN,
            dlt: int = DLT_EN10MB) -> PreparedFilter:
    """Compile for link type dlt and translate; raises FilterSyntaxError or
    UnsupportedFilter (exit 2)."""
    insns = compile_filter(expression, netmask, dlt)
    return PreparedFilter(expression, insns, translate(insns), local_hosts(expression))
