"""Load a translated filter and compare its verdicts with libpcap's, for `ncebpf explain`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ncebpf.errors import CompileError
from ncebpf.filter.cbpf import Insn
from ncebpf.filter.pcap import pcap_verdict
from ncebpf.filter.translate import Translation
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import BuildOptions, loaded_programs

XDP_PASS = 2


@dataclass
class FilterCheck:
    accepted: bool
    log: str = ""  # what BCC and the verifier said, when the kernel refused
    xlated_insns: int = 0  # of the test-run program: the filter plus a few instructions
    frames: int = 0
    matches: int = 0
    disagreements: list[tuple[bytes, bool, bool]] = field(default_factory=list)  # kernel, pcap


@contextmanager
def _stderr_into(sink: list[str]) -> Iterator[None]:
    """BCC and libbpf print the verifier log straight to file descriptor 2."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sink.append(capture.read().decode(errors="replace"))


def check_filter(translation: Translation, insns: tuple[Insn, ...],
                 frames: list[bytes]) -> FilterCheck:
    log: list[str] = []
    try:
        with _stderr_into(log), \
                loaded_programs(BuildOptions(max_peers=64, filter=translation)) as programs:
            info = libbpf.prog_info_by_fd(programs.verdict.fd)
            result = FilterCheck(accepted=True, xlated_insns=info.xlated_insns)
            for frame in frames:
                kernel = libbpf.prog_test_run(programs.verdict.fd, frame).retval == XDP_PASS
                pcap = pcap_verdict(insns, frame) != 0
                result.frames += 1
                result.matches += pcap
                if kernel != pcap:
                    result.disagreements.append((frame, kernel, pcap))
            return result
    except CompileError as exc:
        return FilterCheck(accepted=False, log=f"{''.join(log)}{exc}")
