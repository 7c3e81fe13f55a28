"""Translated filters decide exactly as libpcap does, inside the kernel.

Every expression in tests/filter_corpus.py is compiled by libpcap,
translated, and loaded as an XDP and a TC program in one BCC module; each
program's verdict through BPF_PROG_TEST_RUN must equal libpcap's
bpf_filter() on every frame hypothesis draws, and on each filter's own
sample frames.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from ncebpf.errors import KernelError
from ncebpf.filter.cbpf import Insn
from ncebpf.filter.pcap import compile_filter, pcap_verdict
from ncebpf.filter.samples import sample_frames
from ncebpf.filter.translate import translate
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import bpf_source_dir, import_bcc
from ncebpf.kernel.headers import ensure_headers
from tests.filter_corpus import EXPRESSIONS
from tests.packets import frame

pytestmark = pytest.mark.privileged

NETMASK = 0xFFFFFF00  # for 'ip broadcast'
XDP_PASS, TC_ACT_OK = 2, 0
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")  # what the kernel moves into metadata
HARNESS = Path(__file__).parent / "bpf" / "filter_harness.c"


@dataclass
class LoadedFilter:
    expression: str
    insns: tuple[Insn, ...]
    xdp_fd: int
    tc_fd: int
    tagged_fd: int


@pytest.fixture(scope="module")
def filters(privileged: None, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[list[LoadedFilter]]:
    bcc = import_bcc()
    ensure_headers()
    generated = tmp_path_factory.mktemp("filters")
    compiled = [(e, compile_filter(e, NETMASK)) for e in EXPRESSIONS]
    names = [f"filter_{i}" for i in range(len(compiled))]
    header = [translate(insns, name).c_source for (_, insns), name in zip(compiled, names,
                                                                         strict=True)]
    header.append("#define NCEBPF_TEST_FILTERS(F) " + " ".join(f"F({n})" for n in names))
    (generated / "filters.gen.h").write_text("\n".join(header) + "\n")
    module = bcc.BPF(src_file=str(HARNESS).encode(),
                     cflags=[f"-I{bpf_source_dir()}", f"-I{generated}"])
    try:
        yield [LoadedFilter(expression, insns,
                            module.load_func(f"{name}_xdp".encode(), bcc.BPF.XDP).fd,
                            module.load_func(f"{name}_tc".encode(), bcc.BPF.SCHED_CLS).fd,
                            module.load_func(f"{name}_tagged".encode(), bcc.BPF.XDP).fd)
               for (expression, insns), name in zip(compiled, names, strict=True)]
    finally:
        module.cleanup()


def tc_verdict(loaded: LoadedFilter, packet: bytes) -> bool | None:
    """None where the kernel will not build an skb from the frame: an IPv4 or
    IPv6 EtherType whose IP header is cut short (XDP still runs those)."""
    try:
        return libbpf.prog_test_run(loaded.tc_fd, packet).retval == TC_ACT_OK
    except KernelError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return None


def disagreements(loaded: LoadedFilter, frames: list[bytes]) -> list[str]:
    found = []
    for packet in frames:
        expected = pcap_verdict(loaded.insns, packet) != 0
        xdp = libbpf.prog_test_run(loaded.xdp_fd, packet).retval == XDP_PASS
        tc = tc_verdict(loaded, packet)
        tagged = None
        # The kernel untags only frames that keep an Ethernet header after it.
        if len(packet) >= 18 and packet[12:14] in VLAN_TPIDS:
            tagged = libbpf.prog_test_run(loaded.tagged_fd, packet).retval == XDP_PASS
        if xdp != expected or tc not in (expected, None) or tagged not in (expected, None):
            found.append(f"{loaded.expression!r}: libpcap {expected}, xdp {xdp}, tc {tc}, "
                         f"tag in metadata {tagged}: {packet.hex()}")
    return found


def test_corpus_is_broad(filters: list[LoadedFilter]) -> None:
    assert len(filters) >= 150


def test_each_filter_on_its_own_sample_frames(filters: list[LoadedFilter]) -> None:
    found = [d for loaded in filters for d in disagreements(loaded, sample_frames(loaded.insns))]
    assert found == []


@settings(max_examples=1500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(packet=frame())
def test_every_filter_on_generated_frames(filters: list[LoadedFilter], packet: bytes) -> None:
    assert [d for loaded in filters for d in disagreements(loaded, [packet])] == []
