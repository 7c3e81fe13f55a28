"""Typed run configuration: defaults, then a TOML file, then command-line flags.

The file takes the upstream keys (bpf, snaplen, match, nomatch, payload, port,
host, allowed, piddir, sniffer) and ncebpf's own (iface, direction, interval,
xdp_mode, max_peers). Validation follows upstream's check_config (spec §2.2)
in its order and with its messages — `config: <message>`, exit 2 — where
upstream exits 1, and with the checks upstream skipped or got wrong done
properly (port ranges, the allowed list, IPv6).

Building a RunConfig is pure: the interface scan and the name resolver
are passed in, so the rules are tested without root or network.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncebpf.errors import UsageError
from ncebpf.filter.host import first_host

Direction = Literal["both", "ingress", "egress"]
Mode = Literal["auto", "xdp", "tc", "pcap"]
XdpModeName = Literal["auto", "native", "generic"]

DEFAULT_NAME = "ncebpf"
DEFAULT_CONFIG_DIR = Path("/etc/ncebpf")
DEFAULT_STATEDIR = Path("/var/lib/ncebpf")
DEFAULT_PIDDIR = Path("/run/ncebpf")
DEFAULT_INTERVAL_S = 5.0
DEFAULT_MAX_PEERS = 1 << 20
DEFAULT_SNAPLEN = 38  # 14 Ethernet + 20 IPv4 + 4 port bytes, as upstream
MAX_SNAPLEN = 65535
DEFAULT_LISTEN = "127.0.0.1"

# Upstream key -> ncebpf setting.
UPSTREAM_KEYS = {"bpf": "filter", "sniffer": "statedir", "host": "listen", "allowed": "allow",
                 "snaplen": "snaplen", "match": "match", "nomatch": "nomatch",
                 "payload": "payload", "port": "port", "piddir": "piddir"}
OWN_KEYS = {"iface": "iface", "mode": "mode", "direction": "direction",
            "interval": "interval_s", "xdp_mode": "xdp_mode", "max_peers": "max_peers",
            "resolve": "resolve", "resolver": "resolvers", "dns_rate": "dns_rate"}
FILE_KEYS = {**UPSTREAM_KEYS, **OWN_KEYS}
SPECIAL_HOSTS = {"INADDR_LOOPBACK": "127.0.0.1", "INADDR_ANY": "0.0.0.0", "": "127.0.0.1"}

InterfaceAddress = tuple[str, str, int]  # interface name, address, prefix length
Resolver = Callable[[str], list[str]]


class ConfigError(UsageError):
    def __init__(self, message: str) -> None:
        super().__init__(f"config: {message}")


@dataclass(frozen=True)
class Instance:
    """Where one named instance keeps its files; every command takes these."""

    name: str = DEFAULT_NAME
    statedir: Path = DEFAULT_STATEDIR  # dumps: <statedir>/<name>.stats and <name>.json
    piddir: Path = DEFAULT_PIDDIR  # <name>.pid, the control socket <name>.sock

    def dump_path(self, fmt: str) -> Path:
        return self.statedir / f"{self.name}.{'stats' if fmt == 'perl' else 'json'}"

    @property
    def json_path(self) -> Path:
        return self.dump_path("json")

    @property
    def stats_path(self) -> Path:
        return self.dump_path("perl")

    @property
    def pid_path(self) -> Path:
        return self.piddir / f"{self.name}.pid"

    @property
    def control_path(self) -> Path:
        return self.piddir / f"{self.name}.sock"

    @property
    def iface_path(self) -> Path:
        """Which interface the running instance attached to, for `stop` after a SIGKILL."""
        return self.piddir / f"{self.name}.iface"

    @property
    def outcome_path(self) -> Path:
        """How the last background run ended, for `stop`: `<exit status> <one line>`."""
        return self.piddir / f"{self.name}.outcome"

    @property
    def log_path(self) -> Path:
        return self.statedir / f"{self.name}.log"


@dataclass(frozen=True)
class RunConfig:
    iface: str
    instance: Instance = Instance()
    filter: str = ""  # tcpdump expression; empty counts every frame
    mode: Mode = "auto"  # xdp: XDP in, TC out; tc: TC both ways; pcap: libpcap; auto: best
    direction: Direction = "both"
    interval_s: float = DEFAULT_INTERVAL_S  # seconds between drains of the kernel maps
    xdp_mode: XdpModeName = "auto"
    force: bool = False  # displace a foreign XDP program for the run
    max_peers: int = DEFAULT_MAX_PEERS  # peer map capacity; more peers count as overflow
    snaplen: int = DEFAULT_SNAPLEN  # end of the payload-match window (upstream)
    match: str = ""  # count only frames whose window contains this (case-insensitive)
    nomatch: str = ""  # and not this
    payload: int = 0  # start of the window, from the start of the frame
    port: int = 0  # UDP dump listener; 0 = off
    listen: str = DEFAULT_LISTEN  # address the listener binds
    allow: tuple[str, ...] = ()  # who may request dumps; empty = loopback and this host
    promiscuous: bool = False  # the filter's host is a neighbour, not us: a mirror port
    resolve: bool = True  # reverse DNS for peer names (N, T)
    resolvers: tuple[str, ...] = ()  # DNS servers, ADDR[:PORT]; empty = /etc/resolv.conf
    dns_rate: float = 20.0  # PTR queries per second at most
    umask: int = 0o022  # for the files the daemon creates: dumps, log

    @property
    def ingress(self) -> bool:
        return self.direction in ("both", "ingress")

    @property
    def egress(self) -> bool:
        return self.direction in ("both", "egress")


def default_config_path(name: str) -> Path:
    return DEFAULT_CONFIG_DIR / f"{name}.toml"


def read_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file, under ncebpf's names."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no configuration file '{path}'") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read '{path}': {exc}") from None
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FILE_KEYS:
            known = ", ".join(sorted(FILE_KEYS))
            raise ConfigError(f"unknown key '{key}' in '{path}' (known: {known})")
        settings[FILE_KEYS[key]] = value
    return settings


def choose_interface(targets: list[str], addresses: list[InterfaceAddress]
                     ) -> tuple[str, bool] | None:
    """Upstream's interface choice for the filter's host (spec §2.3), without its quirk.

    The interface that has the host's address, non-promiscuous; else the
    alphabetically first interface whose subnet holds it, promiscuous.
    """
    on_subnet: set[str] = set()
    for target in targets:
        ip = ipaddress.ip_address(target)
        for ifname, address, prefixlen in addresses:
            local = ipaddress.ip_address(address)
            if local == ip:
                return ifname, False
            if local.version == ip.version and \
                    ip in ipaddress.ip_network(f"{address}/{prefixlen}", strict=False):
                on_subnet.add(ifname.split(":")[0])
    if on_subnet:
        return sorted(on_subnet)[0], True
    return None


def _writable_dir(path: Path, default: Path) -> bool:
    if path == default:
        path.mkdir(parents=True, exist_ok=True)
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or \
            (isinstance(value, str) and not value.isdigit()):
        raise ConfigError(f"invalid {name} '{value}'")
    return int(value)


def build(settings: Mapping[str, Any], name: str, addresses: list[InterfaceAddress],
          resolve: Resolver) -> RunConfig:
    """Validate settings (ncebpf names) in upstream's order; return the run configuration."""
    expression = str(settings.get("filter") or "")
    iface = settings.get("iface")
    host = first_host(expression)
    promiscuous = False
    if iface is None and host is None:
        raise ConfigError("missing hostname in bpf string (give --iface, or a filter "
                          "that names a host)")
    if host is not None:
        targets = resolve(host)
        if not targets:
            raise ConfigError(f"bad hostname '{host}' in bpf filter string")
        if iface is None:
            chosen = choose_interface(targets, addresses)
            if chosen is None:
                raise ConfigError(f"could not find interface for '{host}' in bpf string")
            iface, promiscuous = chosen
        else:
            own = [a for a in addresses if a[0].split(":")[0] == iface]
            chosen = choose_interface(targets, own)
            promiscuous = chosen is not None and chosen[1]

    statedir = Path(settings.get("statedir") or DEFAULT_STATEDIR).absolute()
    if not _writable_dir(statedir, DEFAULT_STATEDIR):
        raise ConfigError(f"sniffer directory '{settings.get('statedir')}' missing or not "
                          "writable")
    instance = Instance(name, statedir, Path(settings.get("piddir") or DEFAULT_PIDDIR).absolute())
    stats = instance.stats_path
    if stats.exists() and not os.access(stats, os.W_OK):
        raise ConfigError(f"'{stats}' not writable")
    if not _writable_dir(instance.piddir, DEFAULT_PIDDIR):
        raise ConfigError(f"pid directory '{settings.get('piddir')}' missing or not writable")

    snaplen = _integer("snaplen", settings.get("snaplen") or DEFAULT_SNAPLEN)
    snaplen = min(snaplen or DEFAULT_SNAPLEN, MAX_SNAPLEN)
    match, nomatch = str(settings.get("match") or ""), str(settings.get("nomatch") or "")
    match, nomatch = ("" if match == "0" else match), ("" if nomatch == "0" else nomatch)
    payload = _integer("payload", settings.get("payload") or 0)
    if (match or nomatch) and not 0 < payload < snaplen:
        raise ConfigError("invalid payload length")

    port, listen = 0, DEFAULT_LISTEN
    allow: tuple[str, ...] = ()
    if settings.get("port"):
        raw_port = settings["port"]
        if not str(raw_port).isdigit() or not 0 < int(raw_port) < 65536:
            raise ConfigError(f"invalid port number '{raw_port}'")
        port = int(raw_port)
        requested = str(settings.get("listen") if settings.get("listen") is not None
                        else DEFAULT_LISTEN)
        listen_addresses = resolve(SPECIAL_HOSTS.get(requested, requested))
        if not listen_addresses:
            raise ConfigError(f"bad dump host '{requested}'")
        listen = listen_addresses[0]
        allowed = settings.get("allow") or ()
        if isinstance(allowed, str):
            allowed = (allowed,)
        resolved = []
        for entry in allowed:
            found = resolve(str(entry))
            if not found:
                raise ConfigError(f"invalid 'allowed' host or IP '{entry}'")
            resolved += found
        allow = tuple(dict.fromkeys(resolved))

    return RunConfig(
        iface=str(iface), instance=instance, filter=expression,
        mode=settings.get("mode") or "auto", direction=settings.get("direction") or "both",
        interval_s=float(settings.get("interval_s") or DEFAULT_INTERVAL_S),
        xdp_mode=settings.get("xdp_mode") or "auto", force=bool(settings.get("force")),
        max_peers=int(settings.get("max_peers") or DEFAULT_MAX_PEERS), snaplen=snaplen,
        match=match, nomatch=nomatch, payload=payload, port=port, listen=listen, allow=allow,
        promiscuous=promiscuous, resolve=bool(settings.get("resolve", True)),
        resolvers=_resolvers(settings.get("resolvers")),
        dns_rate=float(settings.get("dns_rate") or 20.0),
    )


def _resolvers(value: Any) -> tuple[str, ...]:
    from ncebpf.resolve import parse_server

    servers = (value,) if isinstance(value, str) else tuple(value or ())
    for server in servers:
        parse_server(str(server))  # refuse a bad one now, not after the fork
    return tuple(str(s) for s in servers)


def to_toml(config: RunConfig) -> str:
    """The effective configuration in the file's own keys; `read_file` reads it back."""
    values: dict[str, Any] = {
        "iface": config.iface, "bpf": config.filter, "mode": config.mode,
        "direction": config.direction,
        "interval": config.interval_s, "xdp_mode": config.xdp_mode,
        "max_peers": config.max_peers, "snaplen": config.snaplen, "match": config.match,
        "nomatch": config.nomatch, "payload": config.payload, "port": config.port,
        "host": config.listen, "allowed": list(config.allow),
        "sniffer": str(config.instance.statedir), "piddir": str(config.instance.piddir),
        "resolve": config.resolve, "resolver": list(config.resolvers),
        "dns_rate": config.dns_rate,
    }
    lines = [f"# ncebpf configuration of instance '{config.instance.name}'"
             + (" (promiscuous: the filter's host is a neighbour)" if config.promiscuous else "")]
    for key, value in values.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are valid TOML

