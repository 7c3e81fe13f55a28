"""Typed run configuration: defaults, then a TOML file, then command-line flags.

The file takes the upstream keys (bpf, snaplen, match, nomatch, payload, port,
host, allowed, piddir, sniffer) and ncebpf's own (iface, mode, direction,
interval, xdp_mode, max_peers, resolve, resolver, dns_rate, umask, http,
http_refresh). SETTINGS
describes each once (key, flag, type, range, help); every value, from the
file or a flag, goes through its Setting, so both are refused alike:
`config: <key>: <what is wrong> (<what is allowed>; flag <flag>)`, exit 2.
Validation follows upstream's check_config (spec §2.2) in its order and
with its messages where upstream has one — exit 2 where upstream exits 1 —
with the checks upstream skipped or got wrong done properly (types, port
ranges, the allowed list, IPv6).

Building a RunConfig is pure: the interface scan and the name resolver
are passed in, so the rules are tested without root or network.
check_environment() is the impure rest: the interface, the filter's compile.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncebpf.errors import UsageError
from ncebpf.filter.host import first_host
from ncebpf.payload import fold, kernel_limits, parse_needle

Direction = Literal["both", "ingress", "egress"]
Mode = Literal["auto", "xdp", "tc", "pcap"]
XdpModeName = Literal["auto", "native", "generic"]
MetricsBy = Literal["peer", "cidr"]

DEFAULT_NAME = "ncebpf"
INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
DEFAULT_CONFIG_DIR = Path("/etc/ncebpf")
DEFAULT_STATEDIR = Path("/var/lib/ncebpf")
DEFAULT_PIDDIR = Path("/run/ncebpf")
DEFAULT_INTERVAL_S = 5.0
DEFAULT_CHECKPOINT_S = 60.0
DEFAULT_BPFFS = Path("/sys/fs/bpf")  # where ncebpf.kernel.pins mounts bpffs when absent
DEFAULT_MAX_PEERS = 1 << 20
DEFAULT_SNAPLEN = 38  # 14 Ethernet + 20 IPv4 + 4 port bytes, as upstream
MAX_SNAPLEN = 65535
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_UMASK = 0o022
DEFAULT_HTTP_REFRESH_S = 60  # upstream's CGI cached its report this long
DEFAULT_METRICS_TOP = 50  # per-peer metric series (ncebpf.export.prometheus)
DEFAULT_IPFIX_DOMAIN = 1  # RFC 7011 section 3.1: 0 means no particular domain
DEFAULT_HISTORY_BIN_S = 300
DEFAULT_KEEP_5M_DAYS = 7.0  # vnstat's tiers: 5-minute bins a week, hours 90 days, days forever
DEFAULT_KEEP_HOURLY_DAYS = 90.0
DEFAULT_HISTORY_QUEUE = 2016  # a week of 5-minute bins waiting for a database that is away
HTTP_LOOPBACK = "127.0.0.1"  # where `--http PORT` serves
MAX_PEERS = 1 << 26

SPECIAL_HOSTS = {"INADDR_LOOPBACK": "127.0.0.1", "INADDR_ANY": "0.0.0.0", "": "127.0.0.1"}

InterfaceAddress = tuple[str, str, int]  # interface name, address, prefix length
Resolver = Callable[[str], list[str]]


class ConfigError(UsageError):
    def __init__(self, message: str) -> None:
        super().__init__(f"config: {message}")


Kind = Literal["text", "integer", "number", "boolean", "choice", "strings", "octal"]
_NOUNS: dict[Kind, str] = {
    "text": "a string", "integer": "an integer", "number": "a number",
    "boolean": "true or false", "choice": "a string", "strings": "an array of strings",
    "octal": "an octal string"}


@dataclass(frozen=True)
class Setting:
    """One setting, described once; the file, the flags and the defaults all go through it.

    A value is accepted or refused alike wherever it comes from, with one
    message: `config: <key>: <what is wrong> (<what is allowed>; flag <flag>)`,
    exit 2. Types are TOML's and checked strictly: a quoted number is a
    string, a boolean is `true`/`false`. A flag's text first becomes the value
    TOML would have given (`from_flag`), then meets the same `check`.
    """

    field: str  # the RunConfig field (or Instance's), and build()'s settings key
    key: str | None  # the TOML key; None: a flag only
    flag: str | None  # the command-line option; None: the file only
    kind: Kind
    help: str  # the flag's --help text
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""  # of a number: "seconds"
    allowed_text: str = ""  # what is allowed, when the kind and range do not say it all
    default_text: str | None = None  # for --help; None: the RunConfig default, "": none

    @property
    def name(self) -> str:
        """How messages name the setting: its TOML key, else its flag."""
        return self.key or self.flag or self.field

    @property
    def default(self) -> Any:
        for cls in (RunConfig, Instance):
            fields = cls.__dataclass_fields__
            if self.field in fields:
                return fields[self.field].default
        return None

    @property
    def allowed(self) -> str:
        if self.allowed_text:
            return self.allowed_text
        if self.kind == "choice":
            return "one of " + ", ".join(f'"{choice}"' for choice in self.choices)
        if self.kind == "boolean":
            return "true or false, without quotes"
        if self.kind == "strings":
            return "a string or an array of strings"
        if self.kind == "octal":
            return f'an octal string from "0" to "{self.maximum or 0:o}", such as "027"'
        noun = _NOUNS[self.kind] + (f" of {self.unit}" if self.unit else "")
        if self.minimum is not None and self.maximum is not None:
            return f"{noun} from {_figure(self.minimum)} to {_figure(self.maximum)}"
        if self.minimum is not None:
            return f"{noun}, at least {_figure(self.minimum)}"
        return noun

    @property
    def help_text(self) -> str:
        default = self.default_text
        if default is None:
            value = self.default
            default = "" if self.kind in ("text", "strings", "boolean") else \
                f"{value:03o}" if self.kind == "octal" else \
                _figure(value) if isinstance(value, float) else str(value)
        return f"{self.help} [default: {default}]" if default else self.help

    def refuse(self, problem: str) -> ConfigError:
        flag = f"; flag {self.flag}" if self.flag and self.key else ""
        return ConfigError(f"{self.name}: {problem} ({self.allowed}{flag})")

    def from_flag(self, value: Any) -> Any:
        """What the file would hold for a flag's value: numbers from text, lists from repeats."""
        if self.kind in ("integer", "number") and isinstance(value, str):
            return _number(value)
        if isinstance(value, tuple):
            return list(value)
        return value

    def check(self, value: Any) -> Any:
        """value, typed (an octal string as its int, a list as a tuple); else ConfigError."""
        shown = _toml(value)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise self.refuse(f"{shown} is not true or false")
            return value
        if self.kind in ("integer", "number"):
            return self._check_number(value, shown)
        if self.kind == "strings":
            entries = [value] if isinstance(value, str) else value
            if not isinstance(entries, list | tuple) or \
                    not all(isinstance(entry, str) for entry in entries):
                raise self.refuse(f"{shown} is not {_NOUNS['strings']}")
            return tuple(entries)
        if self.kind == "octal" and isinstance(value, int) and not isinstance(value, bool):
            raise self.refuse(f"{shown} is an integer, not an octal string: TOML integers "
                              "are decimal")
        if not isinstance(value, str):
            raise self.refuse(f"{shown} is not a string")
        if self.kind == "choice" and value not in self.choices:
            raise self.refuse(f"{shown} is not allowed")
        if self.kind == "octal":
            digits = value.removeprefix("0o")
            if not digits or not set(digits) <= set("01234567"):
                raise self.refuse(f"{shown} is not an octal number")
            if int(digits, 8) > (self.maximum or 0):
                raise self.refuse(f"{shown} is out of range")
            return int(digits, 8)
        return value

    def _check_number(self, value: Any, shown: str) -> int | float:
        integer = self.kind == "integer"
        if isinstance(value, bool) or not isinstance(value, int | float):
            if isinstance(value, str) and not isinstance(_number(value), str):
                raise self.refuse(f"{shown} is a string, not {_NOUNS[self.kind]}: write it "
                                  "without quotes")
            raise self.refuse(f"{shown} is not {_NOUNS[self.kind]}")
        if integer and not isinstance(value, int):
            raise self.refuse(f"{shown} is not an integer")
        if not math.isfinite(value) or \
                (self.minimum is not None and value < self.minimum) or \
                (self.maximum is not None and value > self.maximum):
            raise self.refuse(f"{shown} is out of range")
        return value if integer else float(value)


def _figure(number: float) -> str:
    """A limit as people write it: 67108864 and 5, not 6.71089e+07 and 5.0."""
    return str(int(number)) if float(number).is_integer() else repr(number)


def _number(text: str) -> int | float | str:
    """text as TOML would read it unquoted: an integer, a float, or still text."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


@dataclass(frozen=True)
class Instance:
    """Where one named instance keeps its files; every command takes these."""

    name: str = DEFAULT_NAME
    statedir: Path = DEFAULT_STATEDIR  # dumps: <statedir>/<name>.stats and <name>.json
    piddir: Path = DEFAULT_PIDDIR  # <name>.pid, the control socket <name>.sock
    bpffs: Path = DEFAULT_BPFFS  # pinned maps in <bpffs>/ncebpf/<name>/ (ncebpf.kernel.pins)

    def __post_init__(self) -> None:
        # The name becomes file names (and a socket path of at most 107 bytes): no
        # directories, no hidden files, nothing a shell or systemd's %i would mangle.
        if not INSTANCE_NAME.fullmatch(self.name):
            raise UsageError(f"invalid instance name {self.name!r}: use 1 to 64 letters, digits "
                             "and . _ - @, starting with a letter or digit")

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
    def pin_dir(self) -> Path:
        """Where the counting maps are pinned while the programs count without a daemon."""
        return self.bpffs / "ncebpf" / self.name

    @property
    def checkpoint_path(self) -> Path:
        """The table's last checkpoint (ncebpf.checkpoint)."""
        return self.statedir / f"{self.name}.checkpoint"

    @property
    def log_path(self) -> Path:
        return self.statedir / f"{self.name}.log"

    @property
    def history_path(self) -> Path:
        """The default history database (SQLite)."""
        return self.statedir / f"{self.name}.db"

    @property
    def history_spool(self) -> Path:
        """Closed history bins waiting for the database (ncebpf.history.spool)."""
        return self.statedir / f"{self.name}.history"


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
    http: str = ""  # the report server's ADDR:PORT or [V6ADDR]:PORT (http_endpoint); "" = off
    http_refresh_s: int = DEFAULT_HTTP_REFRESH_S  # served reports are at most this old
    metrics: str = ""  # the Prometheus endpoint's ADDR:PORT (http_endpoint); "" = off
    metrics_top: int = DEFAULT_METRICS_TOP  # per-peer (or per-prefix) series: the top N
    metrics_by: MetricsBy = "peer"
    ipfix: str = ""  # the IPFIX collector's ADDR:PORT (http_endpoint's syntax); "" = off
    ipfix_domain: int = DEFAULT_IPFIX_DOMAIN  # observationDomainId of the records
    dns_rate: float = 20.0  # PTR queries per second at most
    umask: int = DEFAULT_UMASK  # for the files the daemon creates: dumps, log
    checkpoint_s: float = DEFAULT_CHECKPOINT_S  # seconds between checkpoints of the table
    history: str = ""  # database URL of the history (ncebpf.history); "" = off
    history_bin_s: int = DEFAULT_HISTORY_BIN_S  # width of a history bin, divides an hour
    keep_5m_days: float = DEFAULT_KEEP_5M_DAYS  # the finest bins are kept this long
    keep_hourly_days: float = DEFAULT_KEEP_HOURLY_DAYS  # hourly ones this long
    history_queue: int = DEFAULT_HISTORY_QUEUE  # closed bins that may wait on disk

    @property
    def ingress(self) -> bool:
        return self.direction in ("both", "ingress")

    @property
    def egress(self) -> bool:
        return self.direction in ("both", "egress")


_KERNEL_MODES = ("auto", "xdp", "tc", "pcap")
_ENDPOINT_TEXT = 'PORT, ADDR:PORT or [V6ADDR]:PORT with an IP address, in quotes'


def _endpoint_setting(field: str, help_text: str) -> Setting:
    """An ADDR:PORT setting (--http, --metrics, --ipfix): checked by _endpoint."""
    return Setting(field, field, f"--{field}", "text", help_text, default_text="off",
                   allowed_text=_ENDPOINT_TEXT)


SETTINGS: tuple[Setting, ...] = (
    Setting("filter", "bpf", "--filter", "text",
            "tcpdump filter expression; or give it as trailing arguments.",
            allowed_text="a tcpdump filter expression, in quotes"),
    Setting("iface", "iface", "--iface", "text",
            "Interface to count on [default: the one that has, or neighbours, the filter's "
            "first host].", allowed_text="an interface name, in quotes"),
    Setting("mode", "mode", "--mode", "choice",
            "xdp: XDP ingress + TC egress; tc: TC on both hooks; pcap: libpcap capture; "
            "auto: the kernel unless it cannot.", choices=_KERNEL_MODES),
    Setting("direction", "direction", "--direction", "choice",
            "Which directions to count: ingress, egress or both.",
            choices=("both", "ingress", "egress")),
    Setting("interval_s", "interval", "--interval", "number",
            "Seconds between drains of the kernel counters.", minimum=0.05, maximum=3600,
            unit="seconds"),
    Setting("xdp_mode", "xdp_mode", "--xdp-mode", "choice",
            "auto: native (driver) XDP where supported, else generic.",
            choices=("auto", "native", "generic")),
    Setting("max_peers", "max_peers", "--max-peers", "integer",
            "Peer map capacity; frames of further new peers count as overflow.",
            minimum=1, maximum=MAX_PEERS),
    Setting("force", None, "--force", "boolean",
            "Displace another XDP program on the interface for this run."),
    Setting("snaplen", "snaplen", "--snaplen", "integer", "End of the payload window.",
            minimum=0, allowed_text=f"an integer, at least 0; 0 = {DEFAULT_SNAPLEN}, "
                                    f"more than {MAX_SNAPLEN} = {MAX_SNAPLEN}"),
    Setting("match", "match", "--match", "text",
            "Count only frames whose payload window contains TEXT (any case)."),
    Setting("nomatch", "nomatch", "--nomatch", "text",
            "Count only frames whose payload window does not contain TEXT."),
    Setting("payload", "payload", "--payload", "integer",
            "Start of the payload window, in bytes from the frame's start.", minimum=0,
            default_text=""),
    Setting("port", "port", "--port", "integer", "UDP port for `dump` requests.",
            minimum=0, maximum=65535, allowed_text="an integer from 1 to 65535, 0 = off",
            default_text="off"),
    Setting("listen", "host", "--listen", "text",
            f"Address the dump listener binds [default: {DEFAULT_LISTEN}].",
            allowed_text="a host name or an IP address in quotes, or \"INADDR_ANY\""),
    Setting("allow", "allowed", "--allow", "strings",
            "Host allowed to request dumps and read --http reports and --metrics; "
            "repeatable; replaces the "
            "default, loopback and this host's addresses [default: those; on a loopback "
            "--http, everyone].",
            allowed_text="an array of host names or IP addresses, in quotes"),
    _endpoint_setting("http", "Serve the reports over HTTP at ADDR:PORT (PORT alone: "
                      "127.0.0.1:PORT); other than loopback, only to --allow'ed clients."),
    Setting("http_refresh_s", "http_refresh", "--http-refresh", "integer",
            "Served reports come from a dump at most this many seconds old.",
            minimum=1, maximum=86400, unit="seconds"),
    _endpoint_setting("metrics", "Serve Prometheus metrics at ADDR:PORT/metrics (PORT alone: "
                      "127.0.0.1:PORT); other than loopback, only to --allow'ed clients. "
                      "--http serves /metrics too."),
    Setting("metrics_top", "metrics_top", "--metrics-top", "integer",
            "Per-peer (or per-prefix) metric series for the top N by bytes only: a bound on "
            "the series a spoofed-source flood makes; 0 = none.", minimum=0, maximum=1000),
    Setting("metrics_by", "metrics_by", "--metrics-by", "choice",
            "Top series per peer, or per prefix (cidr: IPv4 /24, IPv6 /48, as reports "
            "--by cidr).", choices=("peer", "cidr")),
    _endpoint_setting("ipfix", "After each drain, send an IPFIX record per peer and direction "
                      "that moved to the collector at ADDR:PORT over UDP (PORT alone: "
                      "127.0.0.1:PORT; 4739 is IPFIX's)."),
    Setting("ipfix_domain", "ipfix_domain", "--ipfix-domain", "integer",
            "The IPFIX observationDomainId of the records: one per exporting instance.",
            minimum=0, maximum=2**32 - 1),
    Setting("statedir", "sniffer", "--statedir", "text",
            f"Directory for dumps <name>.stats and <name>.json [default: {DEFAULT_STATEDIR}].",
            allowed_text="a directory, in quotes"),
    Setting("piddir", "piddir", "--piddir", "text",
            f"Directory for <name>.pid and the control socket [default: {DEFAULT_PIDDIR}].",
            allowed_text="a directory, in quotes"),
    Setting("bpffs", "bpffs", "--bpffs", "text",
            f"Mount point of the bpf file system; the counting maps are pinned in "
            f"<bpffs>/ncebpf/<name> [default: {DEFAULT_BPFFS}, mounted when absent].",
            allowed_text="a directory, in quotes"),
    Setting("checkpoint_s", "checkpoint", "--checkpoint", "number",
            "Seconds between checkpoints of the table (also at every dump and at stop).",
            minimum=1, maximum=86400, unit="seconds"),
    Setting("history", "history", "--history", "text",
            "Keep each peer's counts per time bin in this database: sqlite:/// and an "
            "absolute path (sqlite:////var/lib/x.db), postgresql://USER@HOST/DB or "
            "mysql://USER@HOST/DB; \"off\" keeps none.",
            default_text="sqlite:///<statedir>/<name>.db",
            allowed_text='a database URL or "off", in quotes'),
    Setting("no_history", None, "--no-history", "boolean",
            "Keep no history (the same as --history off)."),
    Setting("history_bin_s", "history_bin", "--history-bin", "integer",
            "Seconds in a history bin, aligned to the clock: 10 to 3600, dividing an hour.",
            minimum=10, maximum=3600, unit="seconds"),
    Setting("keep_5m_days", "keep_5m", "--keep-5m", "number",
            "Days the history keeps its finest bins; then only their hourly sums.",
            minimum=0.01, maximum=36500, unit="days"),
    Setting("keep_hourly_days", "keep_hourly", "--keep-hourly", "number",
            "Days the history keeps hourly bins; then only their daily sums, which stay.",
            minimum=0.01, maximum=36500, unit="days"),
    Setting("history_queue", "history_queue", "--history-queue", "integer",
            "Closed bins that may wait on disk for a database that is away; beyond it the "
            "oldest go.", minimum=1, maximum=10_000_000),
    Setting("resolve", "resolve", "--no-resolve", "boolean", "Do not look up peer names."),
    Setting("resolvers", "resolver", "--resolver", "strings",
            "DNS server for peer names; repeatable, tried in turn [default: /etc/resolv.conf].",
            allowed_text="an array of ADDR, ADDR:PORT or [V6ADDR]:PORT, in quotes"),
    Setting("dns_rate", "dns_rate", "--dns-rate", "number",
            "At most this many name lookups per second.", minimum=0.1, maximum=100000,
            unit="lookups per second"),
    Setting("umask", "umask", "--umask", "octal",
            "Permission mask, in octal, of the files the daemon creates (dumps, log); in the "
            'file a string, umask = "027".', maximum=0o777),
)
SETTING = {setting.field: setting for setting in SETTINGS}
FILE_KEYS = {setting.key: setting.field for setting in SETTINGS if setting.key}


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


def _value(settings: Mapping[str, Any], field: str, default: Any = None) -> Any:
    """The setting's checked value, or default when it is not set."""
    value = settings.get(field)
    return default if value is None else SETTING[field].check(value)


def _port(value: Any) -> int:
    """Upstream's message for a bad port, except for a quoted number (TOML strictness)."""
    if value is None or value == "" or (type(value) is int and value == 0):
        return 0  # upstream: unset, empty or 0 = off (and false is no 0 here)
    setting = SETTING["port"]
    if isinstance(value, str) and value.isdigit():
        return int(setting.check(value))  # refuses it: a string where a number is needed
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"invalid port number '{_plain(value)}'")
    return value


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else _toml(value)


def build(settings: Mapping[str, Any], name: str, addresses: list[InterfaceAddress],
          resolve: Resolver) -> RunConfig:
    """Check every setting (ncebpf names, values as TOML gives them) and return the run config.

    The upstream keys are checked in upstream's order with its messages
    (spec §2.2), then ncebpf's own; each value goes through its Setting, so a
    value is refused alike whether it came from the file or a flag.
    Raises ConfigError (exit 2).
    """
    unknown = set(settings) - set(SETTING)
    if unknown:
        raise ValueError(f"not settings: {sorted(unknown)}")  # a caller's bug, not the user's
    expression = _value(settings, "filter", "")
    iface = _value(settings, "iface")
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

    given_statedir = _value(settings, "statedir", "")
    statedir = Path(given_statedir or DEFAULT_STATEDIR).absolute()
    if not _writable_dir(statedir, DEFAULT_STATEDIR):
        raise ConfigError(f"sniffer directory '{given_statedir}' missing or not writable")
    given_piddir = _value(settings, "piddir", "")
    instance = Instance(name, statedir, Path(given_piddir or DEFAULT_PIDDIR).absolute(),
                        Path(_value(settings, "bpffs", "") or DEFAULT_BPFFS).absolute())
    stats = instance.stats_path
    if stats.exists() and not os.access(stats, os.W_OK):
        raise ConfigError(f"'{stats}' not writable")
    if not _writable_dir(instance.piddir, DEFAULT_PIDDIR):
        raise ConfigError(f"pid directory '{given_piddir}' missing or not writable")

    # Upstream: a false snaplen keeps the default, a large one is clamped.
    snaplen = min(_value(settings, "snaplen", 0) or DEFAULT_SNAPLEN, MAX_SNAPLEN)
    match, nomatch = _needle(settings, "match"), _needle(settings, "nomatch")
    payload = _value(settings, "payload", 0)
    if (match or nomatch) and not 0 < payload < snaplen:
        raise ConfigError("invalid payload length")

    port = _port(settings.get("port"))
    requested = _value(settings, "listen", DEFAULT_LISTEN)
    allowed = _value(settings, "allow", ())
    http = _endpoint("http", _value(settings, "http", ""))
    metrics = _endpoint("metrics", _value(settings, "metrics", ""))
    ipfix = _endpoint("ipfix", _value(settings, "ipfix", ""))
    if ipfix and ipaddress.ip_address(http_endpoint(ipfix)[0]).is_unspecified:
        raise SETTING["ipfix"].refuse(f"{_toml(ipfix)} names no host: give the collector's "
                                      "address")
    if metrics and metrics == http:
        raise SETTING["metrics"].refuse(f"{_toml(metrics)} is --http's too: --http serves "
                                        "/metrics itself, or give another port")
    listen, allow = DEFAULT_LISTEN, tuple[str, ...]()
    if port:  # upstream examines host and allowed only for a listener
        listen_addresses = resolve(SPECIAL_HOSTS.get(requested, requested))
        if not listen_addresses:
            raise ConfigError(f"bad dump host '{requested}'")
        listen = listen_addresses[0]
    if port or http or metrics:  # the HTTP servers answer the same allowed list
        resolved: list[str] = []
        for entry in allowed:
            found = resolve(entry)
            if not found:
                raise ConfigError(f"invalid 'allowed' host or IP '{entry}'")
            resolved += found
        allow = tuple(dict.fromkeys(resolved))

    history = "off" if _value(settings, "no_history", False) else \
        _value(settings, "history", "")
    if history == "off":
        history = ""
    elif not history:
        history = f"sqlite:///{instance.history_path}"
    else:
        from ncebpf.history.store import HistoryUrlError, database_url, sqlite_path
        try:
            database_url(history)
        except HistoryUrlError as exc:
            raise ConfigError(str(exc)) from None
        path = sqlite_path(history)
        if path is not None and not _writable_dir(Path(path).parent, Path()):
            raise SETTING["history"].refuse(f"the directory of {path} is missing or not "
                                            "writable")
    history_bin_s = _value(settings, "history_bin_s", DEFAULT_HISTORY_BIN_S)
    if 3600 % history_bin_s:
        raise SETTING["history_bin_s"].refuse(f"{history_bin_s} does not divide an hour")
    keep_5m = _value(settings, "keep_5m_days", DEFAULT_KEEP_5M_DAYS)
    keep_hourly = _value(settings, "keep_hourly_days", DEFAULT_KEEP_HOURLY_DAYS)
    if keep_hourly < keep_5m:
        raise SETTING["keep_hourly_days"].refuse(
            f"{_figure(keep_hourly)} is less than keep_5m's {_figure(keep_5m)}: hourly bins "
            "are summed from the finer ones, so they are kept at least as long")

    return RunConfig(
        iface=iface, instance=instance, filter=expression,
        mode=_value(settings, "mode", "auto"), direction=_value(settings, "direction", "both"),
        interval_s=_value(settings, "interval_s", DEFAULT_INTERVAL_S),
        xdp_mode=_value(settings, "xdp_mode", "auto"), force=_value(settings, "force", False),
        max_peers=_value(settings, "max_peers", DEFAULT_MAX_PEERS), snaplen=snaplen,
        match=match, nomatch=nomatch, payload=payload, port=port, listen=listen, allow=allow,
        promiscuous=promiscuous, resolve=_value(settings, "resolve", True),
        resolvers=_resolvers(_value(settings, "resolvers", ())),
        dns_rate=_value(settings, "dns_rate", 20.0),
        umask=_value(settings, "umask", DEFAULT_UMASK), http=http,
        http_refresh_s=_value(settings, "http_refresh_s", DEFAULT_HTTP_REFRESH_S),
        metrics=metrics, metrics_top=_value(settings, "metrics_top", DEFAULT_METRICS_TOP),
        metrics_by=_value(settings, "metrics_by", "peer"),
        ipfix=ipfix, ipfix_domain=_value(settings, "ipfix_domain", DEFAULT_IPFIX_DOMAIN),
        checkpoint_s=_value(settings, "checkpoint_s", DEFAULT_CHECKPOINT_S),
        history=history, history_bin_s=history_bin_s,
        keep_5m_days=keep_5m, keep_hourly_days=keep_hourly,
        history_queue=_value(settings, "history_queue", DEFAULT_HISTORY_QUEUE),
    )


def instance_of(settings: Mapping[str, Any], name: str) -> Instance:
    """Where an instance keeps its files, from checked settings; no directory is touched."""
    return Instance(name, Path(_value(settings, "statedir", "") or DEFAULT_STATEDIR).absolute(),
                    Path(_value(settings, "piddir", "") or DEFAULT_PIDDIR).absolute(),
                    Path(_value(settings, "bpffs", "") or DEFAULT_BPFFS).absolute())


def check_environment(config: RunConfig) -> None:
    """Refuse, before anything starts, what attach would refuse about this machine.

    The interface must exist (InterfaceNotFound), and libpcap must compile
    the filter on a dead Ethernet handle with the interface's netmask, as
    the daemon compiles it (FilterSyntaxError, libpcap's own message). The
    filters only a capture runs (`inbound`, `outbound`, `ifindex N`: socket
    metadata) compile there; auto mode counts them with libpcap, and only an
    explicit kernel mode refuses them, as the daemon does. An SQLite history file that
    is there must be a history ncebpf can write (a server database is the daemon's to
    reach: it may be down for now). Exit 2; reads the interface table, needs no root.
    build() stays pure: this is its impure half.
    """
    from ncebpf.filter.pcap import compile_filter
    from ncebpf.filter.translate import translate
    from ncebpf.history.store import check_sqlite
    from ncebpf.kernel.netif import ifindex_of, ipv4_netmask

    ifindex_of(config.iface)
    insns = compile_filter(config.filter, ipv4_netmask(config.iface)) if config.filter else ()
    if config.mode in ("xdp", "tc"):
        if insns:
            translate(insns)  # UnsupportedFilter
        reason = kernel_limits(fold(parse_needle(config.match)),
                               fold(parse_needle(config.nomatch)), config.payload,
                               config.snaplen)
        if reason is not None:
            raise UsageError(reason)
    if config.history:
        problem = check_sqlite(config.history)
        if problem:
            raise SETTING["history"].refuse(problem)


def _needle(settings: Mapping[str, Any], field: str) -> str:
    """A match/nomatch string, "" when unset; upstream's "0" means unset too."""
    text: str = _value(settings, field, "")
    try:
        parse_needle(text)  # refuse it now, as attach would
    except UsageError:
        raise SETTING[field].refuse(f"{_toml(text)} has characters beyond \\xff: write them "
                                    "as \\xHH escapes") from None
    return "" if text == "0" else text


def http_endpoint(text: str) -> tuple[str, int]:
    """(IP address, port) of `PORT`, `ADDR:PORT` or `[V6ADDR]:PORT`; PORT alone is loopback's.

    The address is an IP address, not a name: a server binds one address,
    and a name could stand for several. Raises ValueError with the reason.
    """
    host, port_text = HTTP_LOOPBACK, text
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]:")
        if not bracket or ipaddress.ip_address(host).version != 6:
            raise ValueError("write an IPv6 address as [V6ADDR]:PORT")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets, [V6ADDR]:PORT")
        ipaddress.IPv4Address(host)  # ValueError: not an IPv4 address
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError("the port is a number from 1 to 65535")
    return str(ipaddress.ip_address(host)), int(port_text)


def _endpoint(field: str, text: str) -> str:
    """An HTTP server's endpoint (--http, --metrics), checked and written as
    `http_endpoint` reads it."""
    if not text:
        return ""
    try:
        host, port = http_endpoint(text)
    except ValueError:
        raise SETTING[field].refuse(f"{_toml(text)} is not an address and port") from None
    return endpoint_text(host, port)


def endpoint_text(address: str, port: int) -> str:
    """`ADDR:PORT`, or `[V6ADDR]:PORT` (RFC 3986 section 3.2.2): what http_endpoint reads."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _resolvers(servers: tuple[str, ...]) -> tuple[str, ...]:
    from ncebpf.resolve import parse_server

    for server in servers:
        try:
            parse_server(server)  # refuse a bad one now, not after the fork
        except UsageError:
            raise SETTING["resolvers"].refuse(f"{_toml(server)} is not a name server "
                                              "address") from None
    return servers


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
        "dns_rate": config.dns_rate, "umask": f"{config.umask:03o}",
        "http": config.http, "http_refresh": config.http_refresh_s,
        "metrics": config.metrics, "metrics_top": config.metrics_top,
        "metrics_by": config.metrics_by, "ipfix": config.ipfix,
        "ipfix_domain": config.ipfix_domain,
        "checkpoint": config.checkpoint_s, "bpffs": str(config.instance.bpffs),
        "history": config.history or "off", "history_bin": config.history_bin_s,
        "keep_5m": config.keep_5m_days, "keep_hourly": config.keep_hourly_days,
        "history_queue": config.history_queue,
    }
    lines = [f"# ncebpf configuration of instance '{config.instance.name}'"
             + (" (promiscuous: the filter's host is a neighbour)" if config.promiscuous else "")]
    for key, value in values.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """value in TOML syntax: for the file, and to show a value in a message as it was written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) \
            + "}"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return json.dumps(str(value), ensure_ascii=False)  # JSON escapes are valid TOML

