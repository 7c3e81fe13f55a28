"""The systemd unit runs `attach` for the instance and stops it with SIGTERM."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[1] / "packaging" / "systemd" / "ncebpf@.service"


def test_unit_runs_the_instance_in_the_foreground() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    exec_start = unit["Service"]["ExecStart"].split()
    assert exec_start[0] == "@NCEBPF@"  # filled in by `make install-systemd`
    assert exec_start[1:5] == ["attach", "--name", "%i", "--config"]
    assert exec_start[5] == "/etc/ncebpf/%i.toml"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Service"]["Type"] == "simple"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
