"""Compile bpf/ncebpf.c with BCC and load its programs into the kernel.

Variants are chosen with -D flags only; the C never passes through a Python
string. BCC is imported lazily so that everything else in ncebpf imports and
tests without it.
"""

from __future__ import annotations

import ctypes as ct
import importlib.resources
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncebpf.errors import BccMissing, CompileError
from ncebpf.filter.translate import Translation
from ncebpf.kernel.headers import ensure_headers
from ncebpf.payload import needle_words

XDP_FUNCTION = "ncebpf_xdp"
TC_FUNCTION = "ncebpf_tc"
VERDICT_FUNCTION = "ncebpf_filter_verdict"  # never attached; test-run for filter verdicts
PAYLOAD_VERDICT_FUNCTION = "ncebpf_payload_verdict"  # never attached; test-run
GENERATED_FILTER_HEADER = "ncebpf_filter.h"
PROGRAM_NAMES = (XDP_FUNCTION, TC_FUNCTION)  # how ncebpf recognises its own programs


def bpf_source_dir() -> Path:
    """bpf/ from the installed package (wheel), else from the source checkout."""
    packaged = Path(str(importlib.resources.files("ncebpf"))) / "bpf"
    if (packaged / "ncebpf.c").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "bpf"
    if (checkout / "ncebpf.c").is_file():
        return checkout
    raise CompileError(f"ncebpf's C sources are missing (looked in {packaged} and {checkout})")


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError as exc:
        raise BccMissing() from exc
    return bcc


@dataclass(frozen=True)
class PayloadOptions:
    """Payload match/nomatch for the kernel search; needles ASCII-lower-cased."""

    match: bytes
    nomatch: bytes
    payload: int  # the window starts here ...
    snaplen: int  # ... and ends here, or at the end of the frame

    def cflags(self) -> list[str]:
        flags = ["-DNCEBPF_PAYLOAD", f"-DNCEBPF_PAYLOAD_OFF={self.payload}",
                 f"-DNCEBPF_SNAPLEN={self.snaplen}"]
        return flags + ["-DNCEBPF_MATCH"] * bool(self.match) + \
            ["-DNCEBPF_NOMATCH"] * bool(self.nomatch)


@dataclass(frozen=True)
class BuildOptions:
    max_peers: int = 1 << 20  # capacity of the peer map; beyond it frames count as overflow
    filter: Translation | None = None  # the user's tcpdump filter, translated
    payload: PayloadOptions | None = None
    raw_ip: bool = False  # frames start at the IP header (tun, WireGuard, PPP, ipip, GRE)
    # False where the kernel lacks bpf_xdp_load_bytes (5.18): with a payload
    # search the XDP programs are then not loaded, the TC program searches.
    xdp_payload: bool = True
    # Where the counting maps are pinned (ncebpf.kernel.pins); None: not pinned.
    pin_dir: Path | None = None

    @property
    def loads_xdp(self) -> bool:
        """Whether ncebpf_xdp (and ncebpf_payload_verdict) are loaded."""
        return self.payload is None or self.xdp_payload

    def cflags(self, generated_dir: Path | None = None) -> list[str]:
        flags = [f"-I{bpf_source_dir()}", f"-DNCEBPF_MAX_PEERS={self.max_peers}"]
        if self.filter is not None:
            assert generated_dir is not None
            flags += [f"-I{generated_dir}", "-DNCEBPF_FILTER"]
        if self.payload is not None:
            flags += self.payload.cflags()
        if self.raw_ip:
            flags.append("-DNCEBPF_RAW_IP")
        if self.pin_dir is not None:
            # No shell between us and clang: the quotes make the C string literal.
            flags.append(f'-DNCEBPF_PIN_DIR="{self.pin_dir}"')
        return flags


def _set_needles(module: Any, payload: PayloadOptions) -> None:
    needles = module[b"payload_needles"]
    for slot, needle in ((0, payload.match), (1, payload.nomatch)):
        leaf = needles.Leaf()
        leaf.len = len(needle)
        leaf.first = needle[0] if needle else 0
        words, masks = needle_words(needle)
        for i, (word, mask) in enumerate(zip(words, masks, strict=True)):
            leaf.words[i], leaf.masks[i] = word, mask
        needles[ct.c_int(slot)] = leaf


@contextmanager
def generated_headers(options: BuildOptions) -> Iterator[Path | None]:
    """A private directory holding ncebpf_filter.h for one compile, removed afterwards."""
    if options.filter is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ncebpf-build-") as directory:
        header = Path(directory) / GENERATED_FILTER_HEADER
        header.write_text(options.filter.c_source)
        yield Path(directory)


@dataclass
class LoadedPrograms:
    """The compiled module, its loaded programs and its maps."""

    bpf: Any
    xdp: Any  # bcc.BPF.Function: .fd, .name; None when BuildOptions.loads_xdp is False
    tc: Any
    verdict: Any  # the filter alone, for test runs; None without a filter
    payload_verdict: Any  # the payload search alone, for test runs; None without one or XDP
    compile_seconds: float

    def table(self, name: str) -> Any:
        return self.bpf[name.encode()]


@contextmanager
def loaded_programs(options: BuildOptions = BuildOptions()) -> Iterator[LoadedPrograms]:
    """Compile and load both programs; close every fd on exit.

    Closing our fds does not detach anything: attachments hold their own
    references and are undone by ncebpf.kernel.attach.
    """
    bcc = import_bcc()
    ensure_headers()
    source = bpf_source_dir() / "ncebpf.c"
    started = time.monotonic()
    with generated_headers(options) as generated_dir:
        try:
            module = bcc.BPF(src_file=str(source).encode(), cflags=options.cflags(generated_dir))
        except Exception as exc:  # BCC raises bare Exception, clang's output went to stderr
            raise CompileError(f"BCC could not compile {source}: {exc}") from exc
    try:
        try:
            xdp = module.load_func(XDP_FUNCTION.encode(), bcc.BPF.XDP) \
                if options.loads_xdp else None
            tc = module.load_func(TC_FUNCTION.encode(), bcc.BPF.SCHED_CLS)
            verdict = None if options.filter is None else \
                module.load_func(VERDICT_FUNCTION.encode(), bcc.BPF.XDP)
            payload_verdict = None if options.payload is None or not options.loads_xdp else \
                module.load_func(PAYLOAD_VERDICT_FUNCTION.encode(), bcc.BPF.XDP)
        except Exception as exc:
            raise CompileError(f"the kernel rejected ncebpf's programs: {exc}") from exc
        if options.payload is not None:
            _set_needles(module, options.payload)
        yield LoadedPrograms(module, xdp, tc, verdict, payload_verdict,
                             time.monotonic() - started)
    finally:
        module.cleanup()
