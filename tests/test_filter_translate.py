"""The translator without root: it compiles, refuses what it must, and says why."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ncebpf.filter import cbpf, prepare
from ncebpf.filter.cbpf import Insn, listing
from ncebpf.filter.pcap import FilterSyntaxError, compile_filter
from ncebpf.filter.translate import UnsupportedFilter, translate
from ncebpf.kernel.build import bpf_source_dir
from tests.filter_corpus import EXPRESSIONS, KERNEL_UNSUPPORTED

RET_K = cbpf.RET | cbpf.RVAL_K
LD_IMM = cbpf.LD | cbpf.IMM


def test_every_translation_compiles_as_plain_c(tmp_path: Path) -> None:
    """gcc stands in for clang here: it needs no root and no BCC."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    assert compiler, "a C compiler is part of the test set-up (apt-get install gcc)"
    units = ["#include <linux/types.h>", "#include \"byteorder.h\"",
             "#ifndef __always_inline",
             "#define __always_inline inline __attribute__((always_inline))", "#endif"]
    units += [translate(compile_filter(e, 0xFFFFFF00), f"filter_{i}").c_source
              for i, e in enumerate(EXPRESSIONS)]
    source = tmp_path / "filters.c"
    source.write_text("\n".join(units))
    result = subprocess.run([compiler, "-fsyntax-only", "-std=gnu11", "-Wall", "-Wextra",
                             "-Werror", "-Wno-unused-function", f"-I{bpf_source_dir()}",
                             str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[:3000]


@pytest.mark.parametrize("expression", KERNEL_UNSUPPORTED)
def test_kernel_unsupported_constructs_are_named(expression: str) -> None:
    with pytest.raises(UnsupportedFilter) as refused:
        translate(compile_filter(expression))
    assert str(refused.value).startswith("this filter cannot run in the kernel: ")
    assert re.search(r"protochain|inbound|ifindex", str(refused.value))


@pytest.mark.parametrize(("program", "reason"), [
    ((), "empty"),
    ((Insn(LD_IMM, 0, 0, 1), Insn(cbpf.ALU | cbpf.DIV | cbpf.K, 0, 0, 0), Insn(RET_K, 0, 0, 1)),
     "divides by the constant 0"),
    ((Insn(LD_IMM, 0, 0, 1), Insn(cbpf.ALU | cbpf.LSH | cbpf.K, 0, 0, 32), Insn(RET_K, 0, 0, 1)),
     "shifts by 32 bits"),
    ((Insn(cbpf.JMP | cbpf.JEQ | cbpf.K, 5, 0, 1), Insn(RET_K, 0, 0, 1)), "past the end"),
    ((Insn(LD_IMM, 0, 0, 1),), "past the end"),
    ((Insn(cbpf.LD | cbpf.MEM, 0, 0, 16), Insn(RET_K, 0, 0, 1)), "scratch word 16"),
    ((Insn(0xFF, 0, 0, 0), Insn(RET_K, 0, 0, 1)), "unknown opcode"),
])
def test_malformed_programs_are_refused(program: tuple[Insn, ...], reason: str) -> None:
    with pytest.raises(UnsupportedFilter, match=reason):
        translate(program)


@pytest.mark.parametrize(("expression", "pull_len"), [
    ("ip", 14),
    ("udp port 53", 14 + 60 + 4),  # X from 4*([14]&0xf) is at most 60
    ("len > 100", 0),
    ("ether[ether[0:4] & 0xffff] = 1", 0xFFFF),  # X from packet data: pull everything
])
def test_pull_length(expression: str, pull_len: int) -> None:
    assert translate(compile_filter(expression)).pull_len == pull_len


def test_guards_and_semantics_in_the_c() -> None:
    c_source = translate(compile_filter("ip[8] / ip[1] > 1 and ip[0] << ip[9] > 0")).c_source
    assert "if (X == 0)\n\t\treturn 0;\n\tA /= X;" in c_source
    assert "A = X < 32 ? A << X : 0;" in c_source
    indirect = translate(compile_filter("udp port 53")).c_source
    assert "off = (__u64)X + " in indirect and "if (off > 65520)\n\t\treturn 0;" in indirect


@pytest.mark.parametrize("expression", ["tcp[13] = 2 and ip", "vlan 10 and host 10.1.2.3",
                                        "ip6 and udp portrange 5000-6000", "len > 100"])
def test_listing_matches_tcpdump(expression: str) -> None:
    tcpdump = shutil.which("tcpdump")
    assert tcpdump, "tcpdump is part of the test set-up"
    reference = subprocess.run([tcpdump, "-d", expression], capture_output=True, text=True,
                               check=True).stdout
    normalise = lambda text: [" ".join(line.split()) for line in text.splitlines()]  # noqa: E731
    assert normalise(listing(compile_filter(expression))) == normalise(reference)


def test_syntax_errors_carry_libpcap_text() -> None:
    with pytest.raises(FilterSyntaxError, match="syntax error"):
        compile_filter("udp prt 53")
    with pytest.raises(FilterSyntaxError) as error:
        compile_filter("udp prt 53")
    assert error.value.exit_code == 2


def test_prepare_takes_the_first_host_as_local() -> None:
    prepared = prepare("dst host 10.77.0.1 and udp port 53 or host 10.77.0.9")
    assert prepared.local_hosts == ("10.77.0.1",)
    assert prepare("udp").local_hosts == ()
