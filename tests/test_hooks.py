"""Issue 10, item 9: start's exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.netns import NCEBPF

# -- item 9: start's exit status ----------------------------------------------------------

@pytest.mark.parametrize("expression", ["net 10.77.0.1/24", "udp porrt 53"])
def test_start_with_a_bad_filter_exits_2(tmp_path: Path, expression: str) -> None:
    out = subprocess.run([*NCEBPF, "start", "--iface", "lo", "--statedir", str(tmp_path),
                          "--piddir", str(tmp_path), expression],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and f"bad filter '{expression}'" in out.stderr
