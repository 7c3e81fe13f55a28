"""Typed run configuration. Later issues add the TOML file and upstream keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Direction = Literal["both", "ingress", "egress"]
XdpModeName = Literal["auto", "native", "generic"]

DEFAULT_NAME = "ncebpf"
DEFAULT_STATEDIR = Path("/var/lib/ncebpf")
DEFAULT_PIDDIR = Path("/run/ncebpf")
DEFAULT_INTERVAL_S = 5.0
DEFAULT_MAX_PEERS = 1 << 20


@dataclass(frozen=True)
class Instance:
    """Where one named instance keeps its files; every command takes these."""

    name: str = DEFAULT_NAME
    statedir: Path = DEFAULT_STATEDIR  # dumps: <statedir>/<name>.json
    piddir: Path = DEFAULT_PIDDIR  # <piddir>/<name>.pid and the control socket <name>.sock

    @property
    def json_path(self) -> Path:
        return self.statedir / f"{self.name}.json"

    @property
    def pid_path(self) -> Path:
        return self.piddir / f"{self.name}.pid"

    @property
    def control_path(self) -> Path:
        return self.piddir / f"{self.name}.sock"


@dataclass(frozen=True)
class RunConfig:
    iface: str
    instance: Instance = Instance()
    filter: str = ""  # tcpdump expression; empty counts every frame
    direction: Direction = "both"
    interval_s: float = DEFAULT_INTERVAL_S  # seconds between drains of the kernel maps
    xdp_mode: XdpModeName = "auto"
    force: bool = False  # displace a foreign XDP program for the run
    max_peers: int = DEFAULT_MAX_PEERS  # peer map capacity; more peers count as overflow

    @property
    def ingress(self) -> bool:
        return self.direction in ("both", "ingress")

    @property
    def egress(self) -> bool:
        return self.direction in ("both", "egress")
