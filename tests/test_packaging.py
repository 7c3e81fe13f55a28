"""The wheel carries the C sources the loader compiles at run time, and the report templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_bpf_sources(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("ncebpf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in sorted(p.name for p in (ROOT / "bpf").iterdir()):
        assert f"ncebpf/bpf/{source}" in names
    for template in sorted((ROOT / "ncebpf" / "report" / "templates").iterdir()):
        assert f"ncebpf/report/templates/{template.name}" in names
