"""Configuration: upstream's check_config.t cases (spec §14), interface choice, TOML."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ncebpf.cli import main
from ncebpf.config import (
    ConfigError,
    RunConfig,
    build,
    choose_interface,
    read_file,
    to_toml,
)

ADDRESSES = [("lo", "127.0.0.1", 8), ("eth0", "192.0.2.10", 24), ("eth0:1", "198.51.100.5", 24),
             ("eth1", "10.77.0.1", 16), ("eth1", "fd77::1", 64)]
NAMES = {"dns.example": ["192.0.2.53"], "localhost": ["127.0.0.1"]}


def fake_resolve(host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return NAMES.get(host, [])


def config(tmp_path: Path, **settings: Any) -> RunConfig:
    settings.setdefault("statedir", str(tmp_path))
    settings.setdefault("piddir", str(tmp_path))
    return build(settings, "test", ADDRESSES, fake_resolve)


def refused(tmp_path: Path, **settings: Any) -> str:
    with pytest.raises(ConfigError) as error:
        config(tmp_path, **settings)
    assert error.value.exit_code == 2
    return str(error.value)


def test_upstream_check_config_messages(tmp_path: Path) -> None:
    assert refused(tmp_path).startswith("config: missing hostname in bpf string")
    assert refused(tmp_path, filter="host 1.2.3.4.5") == \
        "config: bad hostname '1.2.3.4.5' in bpf filter string"
    assert refused(tmp_path, filter="host 255.255.255.254") == \
        "config: could not find interface for '255.255.255.254' in bpf string"
    assert config(tmp_path, filter="host 127.0.0.1").iface == "lo"
    assert refused(tmp_path, filter="host 127.0.0.1", statedir="./tmp-missing") == \
        "config: sniffer directory './tmp-missing' missing or not writable"
    assert refused(tmp_path, filter="host 127.0.0.1", port="bad characters 123") == \
        "config: invalid port number 'bad characters 123'"
    assert refused(tmp_path, filter="host 127.0.0.1", port=65432, listen="1.2.3.4.5") == \
        "config: bad dump host '1.2.3.4.5'"
    for host, bound in (("INADDR_LOOPBACK", "127.0.0.1"), ("INADDR_ANY", "0.0.0.0"),
                        ("", "127.0.0.1")):
        assert config(tmp_path, filter="host 127.0.0.1", port=65432, listen=host).listen == bound
    assert refused(tmp_path, filter="host 127.0.0.1", port=65432, allow=["1.2.3.4.5"]) == \
        "config: invalid 'allowed' host or IP '1.2.3.4.5'"
    assert config(tmp_path, filter="host 127.0.0.1", port=65432,
                  allow=["192.168.0.1", "172.16.0.1"]).allow == ("192.168.0.1", "172.16.0.1")
    for bad in ({"match": "x"}, {"nomatch": "x"}, {"match": "x", "payload": 38}):
        assert refused(tmp_path, filter="host 127.0.0.1", **bad) == "config: invalid payload length"
    assert config(tmp_path, filter="host 127.0.0.1", match="x", payload=37).payload == 37


def test_port_range_is_checked(tmp_path: Path) -> None:
    """Upstream let ports above 65535 wrap when bound."""
    assert refused(tmp_path, iface="eth1", port=70000) == "config: invalid port number '70000'"


def test_snaplen_defaults_and_clamps(tmp_path: Path) -> None:
    assert config(tmp_path, iface="eth1").snaplen == 38
    assert config(tmp_path, iface="eth1", snaplen=0).snaplen == 38
    assert config(tmp_path, iface="eth1", snaplen=100000).snaplen == 65535


@pytest.mark.parametrize(("targets", "expected"), [
    (["192.0.2.10"], ("eth0", False)),  # our own address
    (["192.0.2.99"], ("eth0", True)),  # a neighbour: a mirror port
    (["198.51.100.77"], ("eth0", True)),  # via the alias, named without it
    (["fd77::99"], ("eth1", True)),
    (["203.0.113.1"], None),
    (["10.77.0.1"], ("eth1", False)),
])
def test_choose_interface(targets: list[str], expected: tuple[str, bool] | None) -> None:
    assert choose_interface(targets, ADDRESSES) == expected


def test_an_exact_match_is_never_promiscuous() -> None:
    """Upstream counted subnets seen before the exact match (spec §2.3 quirk)."""
    addresses = [("eth0", "10.0.0.1", 8), ("eth1", "10.1.2.3", 24)]
    assert choose_interface(["10.1.2.3"], addresses) == ("eth1", False)


def test_filter_host_chooses_the_interface_and_promiscuity(tmp_path: Path) -> None:
    neighbour = config(tmp_path, filter="dst host 10.77.9.9 and udp port 53")
    assert (neighbour.iface, neighbour.promiscuous) == ("eth1", True)
    named = config(tmp_path, filter="host dns.example")
    assert (named.iface, named.promiscuous) == ("eth0", True)
    explicit = config(tmp_path, iface="eth1", filter="host 10.77.0.1")
    assert not explicit.promiscuous


def test_file_uses_upstream_keys(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('bpf = "host 127.0.0.1"\nsniffer = "/x"\nhost = "INADDR_ANY"\n'
                    'allowed = ["10.77.0.1"]\nport = 9999\niface = "eth1"\n')
    assert read_file(path) == {"filter": "host 127.0.0.1", "statedir": "/x",
                               "listen": "INADDR_ANY", "allow": ["10.77.0.1"],
                               "port": 9999, "iface": "eth1"}


def test_unknown_keys_and_bad_toml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text('bfp = "host 1.2.3.4"\n')
    with pytest.raises(ConfigError, match="unknown key 'bfp'"):
        read_file(path)
    path.write_text('bpf = "unterminated\n')
    with pytest.raises(ConfigError, match="cannot read"):
        read_file(path)
    with pytest.raises(ConfigError, match="no configuration file"):
        read_file(tmp_path / "missing.toml")


def test_toml_round_trip(tmp_path: Path) -> None:
    original = config(tmp_path, iface="eth1", filter='udp port 53 and "quoted" \\ text',
                      port=9999, allow=["10.77.0.1"], match="a\tb", payload=20, snaplen=90)
    path = tmp_path / "again.toml"
    path.write_text(to_toml(original))
    again = build(read_file(path), "test", ADDRESSES, fake_resolve)
    assert again == original


def test_config_command_prints_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "n.toml"
    path.write_text(f'iface = "lo"\ninterval = 9.0\nsniffer = "{tmp_path}"\n'
                    f'piddir = "{tmp_path}"\nbpf = "udp"\n')
    result = CliRunner().invoke(main, ["config", "--config", str(path), "--interval", "2",
                                       "tcp", "port", "80"])
    assert result.exit_code == 0, result.output
    assert 'iface = "lo"' in result.output
    assert "interval = 2.0" in result.output  # the flag beats the file
    assert 'bpf = "tcp port 80"' in result.output


def test_config_command_reports_errors_like_upstream(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "--statedir", str(tmp_path), "--piddir",
                                       str(tmp_path), "host", "1.2.3.4.5"])
    assert result.exit_code == 2
    assert "config: bad hostname '1.2.3.4.5' in bpf filter string" in result.output


# One validation for every source (issue 9): a bad value in the file is refused exactly as
# the same value given as a flag, exit 2, in one line that names the TOML key.
# (TOML line, the key the message names, the same value as command-line flags or None)
BAD_VALUES = [
    ("interval = -5", "interval", ["--interval=-5"]),
    ("interval = 0.01", "interval", ["--interval=0.01"]),
    ('interval = "abc"', "interval", ["--interval=abc"]),
    ('interval = "5"', "interval", None),
    ("interval = nan", "interval", ["--interval=nan"]),
    ("interval = inf", "interval", ["--interval=inf"]),
    ("interval = true", "interval", None),
    ("interval = {seconds = 5}", "interval", None),
    ("max_peers = 1979-05-27", "max_peers", None),
    ('direction = "sideways"', "direction", ["--direction=sideways"]),
    ("direction = 5", "direction", None),
    ('mode = "bogus"', "mode", ["--mode=bogus"]),
    ('xdp_mode = "fast"', "xdp_mode", ["--xdp-mode=fast"]),
    ("max_peers = -1", "max_peers", ["--max-peers=-1"]),
    ("max_peers = 0", "max_peers", ["--max-peers=0"]),
    ("max_peers = 67108865", "max_peers", ["--max-peers=67108865"]),
    ("max_peers = 1.5", "max_peers", ["--max-peers=1.5"]),
    ('max_peers = "100"', "max_peers", None),
    ("dns_rate = 0.01", "dns_rate", ["--dns-rate=0.01"]),
    ('dns_rate = "fast"', "dns_rate", ["--dns-rate=fast"]),
    ('resolve = "no"', "resolve", None),
    ("resolve = 0", "resolve", None),
    ("resolver = 5", "resolver", None),
    ('resolver = ["nosuch"]', "resolver", ["--resolver=nosuch"]),
    ("allowed = 5", "allowed", None),
    ("allowed = [5]", "allowed", None),
    ("port = 9999\nallowed = 5", "allowed", None),
    ("host = 5", "host", None),
    ("port = 70000", "port", ["--port=70000"]),
    ('port = "9999"', "port", None),
    ("port = true", "port", None),
    ("port = false", "port", None),
    ("snaplen = -1", "snaplen", ["--snaplen=-1"]),
    ('snaplen = "90"', "snaplen", None),
    ("payload = -1", "payload", ["--payload=-1"]),
    ("payload = 2.5", "payload", ["--payload=2.5"]),
    ("match = 5", "match", None),
    ('match = "\\u20ac"', "match", ["--match=\u20ac"]),
    ("nomatch = [1]", "nomatch", None),
    ("bpf = 5", "bpf", None),
    ("iface = 5", "iface", None),
    ("sniffer = 5", "sniffer", None),
    ("piddir = false", "piddir", None),
    ('umask = "999"', "umask", ["--umask=999"]),
    ('umask = "1000"', "umask", ["--umask=1000"]),
    ('umask = "u=rwx"', "umask", ["--umask=u=rwx"]),
    ("umask = 18", "umask", None),
]


def _config_file(tmp_path: Path, lines: str = "") -> Path:
    """A valid configuration on lo, with lines replacing or adding keys."""
    values = {"iface": '"lo"', "sniffer": f'"{tmp_path}"', "piddir": f'"{tmp_path}"'}
    for line in lines.splitlines():
        key, _, value = line.partition(" = ")
        values[key] = value
    path = tmp_path / "bad.toml"
    path.write_text("".join(f"{key} = {value}\n" for key, value in values.items()))
    return path


def _refusal(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["config", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: config: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(("line", "key", "flags"), BAD_VALUES,
                         ids=[case[0] for case in BAD_VALUES])
def test_bad_file_values_are_refused_like_flags(tmp_path: Path, line: str, key: str,
                                                flags: list[str] | None) -> None:
    refusal = _refusal(["--config", str(_config_file(tmp_path, line))])
    assert key in refusal
    if flags is not None:
        assert _refusal(["--config", str(_config_file(tmp_path)), *flags]) == refusal


def test_refusals_name_the_key_the_flag_and_what_is_allowed(tmp_path: Path) -> None:
    assert _refusal(["--config", str(_config_file(tmp_path, "max_peers = -1"))]) == \
        "Error: config: max_peers: -1 is out of range (an integer from 1 to 67108864; " \
        "flag --max-peers)"
    assert _refusal(["--config", str(_config_file(tmp_path, 'resolve = "no"'))]) == \
        'Error: config: resolve: "no" is not true or false (true or false, without quotes; ' \
        "flag --no-resolve)"
    assert _refusal(["--config", str(_config_file(tmp_path, 'direction = "sideways"'))]) == \
        'Error: config: direction: "sideways" is not allowed (one of "both", "ingress", ' \
        '"egress"; flag --direction)'


def test_good_values_round_trip(tmp_path: Path) -> None:
    original = config(tmp_path, iface="eth1", mode="tc", direction="egress", interval_s=0.05,
                      xdp_mode="generic", max_peers=1 << 26, resolve=False,
                      resolvers=["10.77.0.53:5353"], dns_rate=0.1, umask="0027", port=1,
                      allow="10.77.0.2", snaplen=65535, payload=64, nomatch="x")
    assert (original.umask, original.allow, original.interval_s) == (0o27, ("10.77.0.2",), 0.05)
    text = to_toml(original)
    assert 'umask = "027"' in text
    path = tmp_path / "again.toml"
    path.write_text(text)
    assert build(read_file(path), "test", ADDRESSES, fake_resolve) == original


def test_umask_default_and_flag(tmp_path: Path) -> None:
    assert config(tmp_path, iface="eth1").umask == 0o022
    assert config(tmp_path, iface="eth1", umask="0").umask == 0
    assert config(tmp_path, iface="eth1", umask="777").umask == 0o777
    path = _config_file(tmp_path, 'umask = "0077"')
    result = CliRunner().invoke(main, ["config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert 'umask = "077"' in result.output
    result = CliRunner().invoke(main, ["config", "--config", str(path), "--umask", "0027"])
    assert result.exit_code == 0, result.output
    assert 'umask = "027"' in result.output  # the flag beats the file
    result = CliRunner().invoke(main, ["attach", "--help"])
    assert "--umask" in result.output and "octal" in result.output


def _ncebpf_config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ncebpf", "config", "--statedir", str(tmp_path),
                           "--piddir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_config_refuses_a_missing_interface_like_attach(tmp_path: Path) -> None:
    result = _ncebpf_config(tmp_path, "--iface", "nosuch0")
    assert result.returncode == 2, result.stdout
    assert result.stderr == "Error: no network interface named 'nosuch0': see 'ip -br link' " \
        "for the names\n"


def test_config_refuses_a_filter_libpcap_cannot_compile(tmp_path: Path) -> None:
    result = _ncebpf_config(tmp_path, "--iface", "lo", "udp porrt 53")
    assert result.returncode == 2, result.stdout
    assert result.stderr == "Error: bad filter 'udp porrt 53': can't parse filter expression: " \
        "syntax error\n"


def test_config_accepts_filters_only_a_capture_runs(tmp_path: Path) -> None:
    """`inbound` & co. need socket metadata: auto mode counts them with libpcap."""
    for expression in ("inbound and udp", "outbound", "ifindex 1"):
        result = _ncebpf_config(tmp_path, "--iface", "lo", expression)
        assert result.returncode == 0, result.stderr
    result = _ncebpf_config(tmp_path, "--iface", "lo", "--mode", "xdp", "inbound")
    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and "inbound" in result.stderr, result.stderr


def test_commands_without_a_run_check_the_directories_too(tmp_path: Path) -> None:
    """stop, status, dump and detach read only sniffer and piddir; those are checked alike."""
    path = _config_file(tmp_path, "sniffer = 5")
    result = CliRunner().invoke(main, ["status", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: config: sniffer: 5 is not a string"), result.output


def test_history_is_on_by_default_beside_the_dumps(tmp_path: Path) -> None:
    assert config(tmp_path, iface="eth1").history == f"sqlite:///{tmp_path}/test.db"
    assert config(tmp_path, iface="eth1", no_history=True).history == ""
    assert config(tmp_path, iface="eth1", history="off").history == ""
    chosen = config(tmp_path, iface="eth1", history="postgresql://u@db.example/t",
                    history_bin_s=60, keep_5m_days=2, history_queue=10)
    assert (chosen.history, chosen.history_bin_s, chosen.keep_5m_days, chosen.history_queue) \
        == ("postgresql://u@db.example/t", 60, 2, 10)
    path = tmp_path / "again.toml"
    path.write_text(to_toml(chosen))
    assert build(read_file(path), "test", ADDRESSES, fake_resolve) == chosen


@pytest.mark.parametrize(("settings", "message"), [
    ({"history": "/var/lib/x.db"}, "is not a database URL"),
    ({"history": "oracle://u@h/d"}, "'oracle' databases are not supported"),
    ({"history": "sqlite:////nonexistent/x.db"}, "the directory of /nonexistent/x.db is"),
    ({"history_bin_s": 420}, "history_bin: 420 does not divide an hour"),
    ({"keep_5m_days": 0}, "keep_5m: 0 is out of range"),
])
def test_bad_history_settings_say_what_to_give(tmp_path: Path, settings: dict[str, Any],
                                               message: str) -> None:
    assert message in refused(tmp_path, iface="eth1", **settings)


def test_history_paths_and_files_are_checked_before_the_start(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    # The daemon runs from /, a report from anywhere: which file would that be?
    assert "a path relative to the working directory" in refused(
        tmp_path, iface="eth1", history="sqlite:///rel.db")
    assert config(tmp_path, iface="eth1", history=f"SQLite:///{tmp_path}/x.db").history
    assert "less than keep_5m's 10" in refused(tmp_path, iface="eth1", keep_5m_days=10,
                                               keep_hourly_days=5)
    (tmp_path / "not.db").write_text("not a database")
    result = CliRunner().invoke(main, ["config", "--iface", "lo", "--statedir", str(tmp_path),
                                       "--piddir", str(tmp_path), "--history",
                                       f"sqlite:///{tmp_path}/not.db"])
    assert result.exit_code == 2 and "is not an SQLite database" in result.output
