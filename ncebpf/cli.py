"""Command line: parse, call, print. Nothing else lives here."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from ncebpf import __version__
from ncebpf.config import (
    DEFAULT_NAME,
    SETTING,
    SETTINGS,
    Instance,
    RunConfig,
    default_config_path,
    instance_of,
    read_file,
)
from ncebpf.errors import NcebpfError
from ncebpf.report import FORMATS
from ncebpf.report.model import BY_CHOICES, DOMAIN_RULES, SORT_CHOICES

F = TypeVar("F", bound=Callable[..., Any])
EXIT_DEAD = 1  # LSB: program is dead and /var/run pid file exists
EXIT_NOT_RUNNING = 3  # LSB: program is not running
EXIT_UNKNOWN = 4  # LSB: program or service status is unknown


class _Seconds(click.FloatRange):
    """A number of seconds in a range; NaN passes click's range check, not this one, and
    text that is no number is said to be none (not click's "is not a valid seconds")."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return super().convert(value, param, ctx)


TIMEOUT = _Seconds(min=0.1, max=86400.0)


class _ExitError(click.ClickException):
    def __init__(self, error: NcebpfError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click declares it ClassVar


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    hint = ""
    if isinstance(exc, PermissionError):
        # A file names its directory; anything else is a privilege the process lacks.
        hint = " (run as root, or choose --statedir/--piddir you can write)" if exc.filename \
            else " (ncebpf needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_NET_RAW)"
    return f"{exc.strerror or exc}{where}{hint}"


class _Group(click.Group):
    """Turns ncebpf's errors, and the OS's, into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (NcebpfError, OSError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            error = exc if isinstance(exc, NcebpfError) else NcebpfError(_describe_os_error(exc))
            raise _ExitError(error) from exc


def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command
    return apply


_METAVARS = {"integer": "N", "number": "NUMBER", "octal": "OCTAL", "text": "TEXT",
             "strings": "TEXT"}


def _setting_option(field: str, *names: str, **extra: Any) -> Callable[[F], F]:
    """The flag of a configuration setting: its text goes to config.build() unconverted.

    click does not check the value: the setting does, so a flag and the same
    value in the file are refused with the same message.
    """
    setting = SETTING[field]
    assert setting.flag is not None
    if setting.kind == "boolean":
        extra.setdefault("flag_value", setting.flag != "--no-" + setting.field)
    else:
        extra.setdefault("metavar", "[" + "|".join(setting.choices) + "]" if setting.choices
                         else _METAVARS[setting.kind])
    return click.option(setting.flag, *names, field, default=None, help=setting.help_text,
                        **extra)


instance_options = _options(
    click.option("--name", default=DEFAULT_NAME, show_default=True,
                 help="Instance name; several instances run side by side."),
    click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                 help="TOML configuration [default: /etc/ncebpf/<name>.toml if it exists]."),
    _setting_option("statedir", metavar="DIR"),
    _setting_option("piddir", metavar="DIR"),
    _setting_option("bpffs", metavar="DIR"),
)

run_options = _options(
    _setting_option("iface", "-i", metavar="IFACE"),
    _setting_option("filter", metavar="EXPR"),
    _setting_option("mode"),
    _setting_option("direction"),
    _setting_option("interval_s", metavar="SECONDS"),
    _setting_option("xdp_mode"),
    _setting_option("max_peers"),
    _setting_option("force"),
    _setting_option("match"),
    _setting_option("nomatch"),
    _setting_option("payload"),
    _setting_option("snaplen"),
    _setting_option("port"),
    _setting_option("listen", metavar="ADDR"),
    _setting_option("allow", multiple=True, metavar="ADDR"),
    _setting_option("resolvers", multiple=True, metavar="ADDR[:PORT]"),
    _setting_option("resolve"),
    _setting_option("dns_rate"),
    _setting_option("umask"),
    _setting_option("http", metavar="ADDR:PORT"),
    _setting_option("http_refresh_s", metavar="SECONDS"),
    _setting_option("metrics", metavar="ADDR:PORT"),
    _setting_option("metrics_top", metavar="N"),
    _setting_option("metrics_by"),
    _setting_option("ipfix", metavar="ADDR:PORT"),
    _setting_option("ipfix_domain", metavar="ID"),
    _setting_option("checkpoint_s", metavar="SECONDS"),
    _setting_option("history", metavar="URL"),
    _setting_option("no_history"),
    _setting_option("history_bin_s", metavar="SECONDS"),
    _setting_option("keep_5m_days", metavar="DAYS"),
    _setting_option("keep_hourly_days", metavar="DAYS"),
    _setting_option("history_queue", metavar="BINS"),
    click.argument("expression", nargs=-1),
    instance_options,
)


history_range_options = _options(
    click.option("--since", metavar="TIME",
                 help="Read the history from TIME: 2026-11-01, 2026-11-01T08:00 (local time "
                      "unless an offset follows) or a span back from now, 24h, 7d "
                      "[default for a range: 24h]. A range holds the bins that start in it: "
                      "past --keep-5m, whole hours."),
    click.option("--until", metavar="TIME", help="... up to TIME [default: now]."),
    click.option("--history", metavar="URL",
                 help="The history database [default: the instance's: the one its last "
                      "run wrote to, else its configuration's, else "
                      "sqlite:///<statedir>/<name>.db]."),
    click.option("--host", "hosts", multiple=True, metavar="HOST[/NAME]",
                 help="Only this host's rows (repeatable) of a database several hosts "
                      "share [default: all]."),
)


def _file_settings(name: str, config_file: Path | None) -> dict[str, Any]:
    if config_file is not None:
        return read_file(config_file)
    default = default_config_path(name)
    return read_file(default) if default.is_file() else {}


def _instance(name: str, config_file: Path | None, statedir: str | None,
              piddir: str | None, bpffs: str | None = None) -> Instance:
    """Where an instance keeps its files, without validating the rest of its configuration."""
    settings = _file_settings(name, config_file)
    if statedir is not None:
        settings["statedir"] = statedir
    if piddir is not None:
        settings["piddir"] = piddir
    if bpffs is not None:
        settings["bpffs"] = bpffs
    return instance_of(settings, name)


def _run_config(ctx: click.Context) -> RunConfig:
    """Defaults, then the TOML file, then the flags given on the command line.

    Checked as attach needs it: every value by its setting, then the machine
    (the interface exists, libpcap compiles the filter).
    """
    from ncebpf.config import build, check_environment
    from ncebpf.filter.host import resolve
    from ncebpf.kernel.netif import all_addresses

    params = ctx.params
    settings = _file_settings(params["name"], params["config_file"])
    given = {setting.field for setting in SETTINGS if setting.flag and
             ctx.get_parameter_source(setting.field) == ParameterSource.COMMANDLINE}
    if {"history", "no_history"} <= given:
        raise click.UsageError("give --history URL or --no-history, not both")
    for setting in SETTINGS:
        if setting.field in given:
            settings[setting.field] = setting.from_flag(params[setting.field])
    words = " ".join(params["expression"])
    if words:
        if ctx.get_parameter_source("filter") == ParameterSource.COMMANDLINE:
            raise click.UsageError("give the filter once: with --filter or as trailing "
                                   "arguments")
        settings["filter"] = words
    config = build(settings, params["name"], all_addresses(), resolve)
    check_environment(config)
    return config


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ncebpf")
@click.option("--debug", is_flag=True, help="Log details and show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Count network traffic per remote IP address, inside the kernel.

    A TC program on the interface's ingress and egress hooks (or, with
    --mode xdp, an XDP program at ingress) adds every IPv4 and IPv6 frame that
    passes a tcpdump filter to a counter for its peer, the address on the far
    side. Counts are exact: nothing is sampled, nothing is lost.

    \b
    Typical use, as root:
      ncebpf attach --iface eth0 'udp port 53'   # in the foreground
      ncebpf start --iface eth0                  # or as a daemon
      ncebpf dump --format json                  # a fresh dump, once written
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.INFO, format=_log_format(), datefmt="%Y-%m-%dT%H:%M:%S%z",
                        stream=sys.stderr)
    # ncebpf's own details only: pyroute2 logs every netlink message at DEBUG.
    logging.getLogger("ncebpf").setLevel(logging.DEBUG if debug else logging.INFO)
    # A log on a full disk must not end the run: drop the line, keep counting.
    logging.raiseExceptions = False


def _log_format() -> str:
    """Time, level, message; the journal stamps lines itself (systemd.exec(5), JOURNAL_STREAM)."""
    try:
        st = os.fstat(sys.stderr.fileno())
        to_journal = os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"
    except (OSError, ValueError):
        to_journal = False
    return "ncebpf %(levelname)s: %(message)s" if to_journal else \
        "%(asctime)s ncebpf %(levelname)s: %(message)s"


@main.command(context_settings={"ignore_unknown_options": False})
@run_options
@click.pass_context
def attach(ctx: click.Context, /, **_: Any) -> None:
    """Count in the foreground until SIGTERM or Ctrl-C.

    Only frames that match EXPRESSION, a tcpdump filter (pcap-filter(7)), are
    counted; it runs inside the kernel. Its first `host` joins the interface's
    addresses on the local side of the peer rule, and chooses the interface
    when --iface is not given. Example:

    \b
      ncebpf attach --iface eth0 'udp port 53 and dst host 10.1.2.3'

    On exit ncebpf writes a final dump and removes exactly what it attached.
    A program that a killed run left behind is replaced; another tool's XDP
    program is left alone unless --force is given. Signals: TERM/INT = final
    dump and exit, HUP = dump and start over, USR1 = dump.
    """
    from ncebpf.daemon import Daemon
    from ncebpf.kernel.privileges import require_capture_privileges

    require_capture_privileges("ncebpf attach")
    Daemon(_run_config(ctx)).run()


@main.command()
@run_options
@click.pass_context
def start(ctx: click.Context, /, **_: Any) -> None:
    """Like attach, in the background; returns once the daemon is counting."""
    from ncebpf import lifecycle
    from ncebpf.kernel.privileges import require_capture_privileges

    require_capture_privileges("ncebpf start")
    config = _run_config(ctx)
    pid = lifecycle.start(config)
    click.echo(f"{config.instance.name} started, pid {pid}")


@main.command()
@instance_options
@click.option("--timeout", type=TIMEOUT, default=15.0, show_default=True,
              help="SIGKILL after this many seconds in which the daemon neither wrote nor "
                   "used CPU; while it drains and writes its final dump it is never killed.")
@click.option("--keep", is_flag=True,
              help="Leave the programs counting into the pinned maps, with a final checkpoint "
                   "of the table: the next 'start' goes on without losing a count.")
def stop(name: str, config_file: Path | None, statedir: str | None, piddir: str | None,
         bpffs: str | None, timeout: float, keep: bool) -> None:
    """Stop a background instance: SIGTERM, final dump, detach.

    Waits for as long as the daemon writes its final dump; SIGKILL only after
    --timeout seconds in which it wrote nothing. Exit 1 when the final dump
    could not go where it belongs (the message says where it went). Without
    --keep the pinned maps and the checkpoint go too: the data set has ended.
    """
    from ncebpf import lifecycle

    click.echo(lifecycle.stop(_instance(name, config_file, statedir, piddir, bpffs), timeout,
                              keep))


@main.command()
@run_options
@click.option("--timeout", type=TIMEOUT, default=15.0, show_default=True,
              help="SIGKILL the old daemon after this many seconds without progress.")
@click.pass_context
def restart(ctx: click.Context, /, timeout: float, **_: Any) -> None:
    """Stop with the programs left counting, wait until gone, start: never two daemons at
    once, and no count lost (the new daemon takes over the pinned maps and the table's
    checkpoint, and replaces the programs in one step)."""
    from ncebpf import lifecycle
    from ncebpf.kernel.privileges import require_capture_privileges

    require_capture_privileges("ncebpf restart")
    config = _run_config(ctx)
    try:
        click.echo(lifecycle.stop(config.instance, timeout, keep=True))
    except NcebpfError as exc:
        if lifecycle.running_pid(config.instance) is not None:
            raise
        # The old run is gone, but ended badly (killed, or its final dump went elsewhere):
        # say so, and start the new one as asked.
        click.echo(f"ncebpf: {exc}", err=True)
    click.echo(f"{config.instance.name} started, pid {lifecycle.start(config)}")


@main.command()
@instance_options
def status(name: str, config_file: Path | None, statedir: str | None,
           piddir: str | None, bpffs: str | None) -> None:
    """Say whether the instance runs: exit 0 running, 3 not running, 1 dead, 4 unknown.

    Dead: it was killed (kill -9, the OOM killer) and left its programs on
    the interface; 'ncebpf stop' removes them.
    """
    from ncebpf.lifecycle import running_pid
    from ncebpf.remains import find, unlocked_process

    instance = _instance(name, config_file, statedir, piddir, bpffs)
    pid = running_pid(instance)
    if pid is not None:
        click.echo(f"{name} running, pid {pid}")
        return
    remains = find(instance)
    if remains is not None and remains.alive:
        click.echo(unlocked_process(instance, remains.pid))
        raise click.exceptions.Exit(EXIT_UNKNOWN)
    stop = f"run 'ncebpf stop --name {name}'"
    if remains is not None and remains.programs and instance.pin_dir.is_dir():
        how = "kept by 'stop --keep'" if remains.pid is None else f"{remains.who} was killed"
        click.echo(f"{name} not running ({how}); its programs on {remains.iface} count on into "
                   f"the maps pinned in {instance.pin_dir}: 'ncebpf start --name {name}' goes on "
                   f"without loss, 'ncebpf stop --name {name}' removes them")
        raise click.exceptions.Exit(EXIT_NOT_RUNNING if remains.pid is None else EXIT_DEAD)
    if remains is not None and remains.programs:
        click.echo(f"{name} is dead ({remains.who}) and left ncebpf programs on "
                   f"{remains.iface}: {stop} to remove them")
        raise click.exceptions.Exit(EXIT_DEAD)
    if remains is not None and remains.unchecked:
        click.echo(f"{name} is dead ({remains.who}) and may have left ncebpf programs on "
                   f"{remains.iface}; {remains.unchecked}")
        raise click.exceptions.Exit(EXIT_DEAD)
    click.echo(f"{name} not running")
    raise click.exceptions.Exit(EXIT_NOT_RUNNING)


@main.command()
@run_options
@click.pass_context
def config(ctx: click.Context, /, **_: Any) -> None:
    """Validate the options as attach would, and print the effective configuration as TOML."""
    from ncebpf.config import to_toml

    click.echo(to_toml(_run_config(ctx)), nl=False)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json", "perl"]), default="json",
              show_default=True, help="json, or the upstream Perl layout (.stats).")
@click.option("--output", "-o", default="-", show_default=True,
              help="Write the dump to this file instead of standard output.")
@click.option("--timeout", type=TIMEOUT, default=30.0, show_default=True,
              help="Give up after this many seconds without an answer or progress from the "
                   "instance (a large table takes long to write, and says how far it got).")
@instance_options
def dump(fmt: str, output: str, timeout: float, name: str, config_file: Path | None,
         statedir: str | None, piddir: str | None, bpffs: str | None) -> None:
    """Ask the running instance for a fresh dump and print it.

    Returns only once the instance has drained its counters and written
    <statedir>/<name>.json and <name>.stats.
    """
    from ncebpf.control import request_dump

    path = request_dump(_instance(name, config_file, statedir, piddir, bpffs), fmt, timeout)
    with path.open() as dumped:  # a dump of a million peers is 170 MB: copy it in pieces
        _write_output(output, iter(lambda: dumped.read(1 << 20), ""))


@main.command()
@click.option("--interval", type=_Seconds(min=0.5, max=3600.0), default=1.0,
              show_default=True, metavar="S",
              help="Seconds between refreshes. The instance drains for each when its last "
                   "drain is older (at most every 0.5 s, however many tops ask), so the "
                   "counts are at most this old.")
@click.option("--by", type=click.Choice(("peer", "cidr", "domain")), default="peer",
              show_default=True,
              help="One row per peer, or per prefix (/24, /48) or registrable domain, as "
                   "'ncebpf report --by' groups them.")
@click.option("--sort", type=click.Choice(("rate", "total", "packets")), default="rate",
              show_default=True,
              help="rate: bytes/s over 10 s (iftop's order); total: bytes since first seen; "
                   "packets: packets/s over 10 s.")
@click.option("--batch", "-b", is_flag=True,
              help="Print plain snapshots with exact figures, like 'top -b', for scripts "
                   "and logs (the default without a terminal).")
@click.option("--iterations", "-n", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N refreshes [default: run until q or Ctrl-C].")
@click.option("--lines", type=click.IntRange(min=1), default=None, metavar="N",
              help="Rows per --batch snapshot [default: all].")
@click.option("--timeout", type=TIMEOUT, default=10.0, show_default=True,
              help="Give up on an answer after this many seconds of silence.")
@instance_options
def top(interval: float, by: str, sort: str, batch: bool, iterations: int | None,
        lines: int | None, timeout: float, name: str, config_file: Path | None,
        statedir: str | None, piddir: str | None, bpffs: str | None) -> None:
    """Who is using the link now: peers by current rate, live.

    A full-screen table, refreshed every --interval seconds, of the running
    instance's peers (or --by groups): bytes/s averaged over the last 2, 10
    and 40 s as iftop shows them, packets/s, in and out, bytes since first
    seen, how long idle and since when listed, names. Above it: the
    interface, filter and mode, frames/s and bytes/s, peers and the map's
    fill, and the frames under no peer (highlighted while they grow).

    \b
    Keys: s sort (rate, total, packets)   b group (peer, cidr, domain)
          / a new filter by address or name (Enter applies it, Enter on
            nothing clears it, Esc keeps the old one)
          p or space pause                q quit

    Needs what 'ncebpf dump' needs: root, or the instance's own user.
    """
    from ncebpf.top.screen import Ended, Session, run_batch, run_screen
    from ncebpf.top.view import By, Sort, ViewOptions

    instance = _instance(name, config_file, statedir, piddir, bpffs)
    # Counts at most 0.9 of a refresh old: each refresh drains when it must, and at the
    # daemon's own interval seldom more often than the daemon does anyway.
    session = Session(instance, timeout, max_age_s=0.9 * interval)
    options = ViewOptions(sort=cast(Sort, sort), by=cast(By, by))
    try:
        if batch or not (sys.stdin.isatty() and sys.stdout.isatty()):
            run_batch(session, options, interval, iterations, lines, sys.stdout)
        else:
            run_screen(session, options, interval, iterations)
    except KeyboardInterrupt:
        pass
    except Ended as ended:  # SIGTERM, SIGHUP: the terminal is given back, as on q
        sys.exit(128 + ended.signum)
    except BrokenPipeError:  # `ncebpf top -b | head`: the reader has had enough
        # What stays buffered would fail again at exit (and make it 120): to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_output(output: str, pieces: Iterable[str]) -> None:
    """Text to standard output ("-"), into a device or FIFO, or atomically into a file
    (through a symbolic link, to its target). Raises NcebpfError naming output."""
    from ncebpf.dump import write_atomically

    if output == "-":
        for piece in pieces:
            click.echo(piece, nl=False)
        return
    # A link is written through: a web root of links keeps them, its targets get the text.
    target = Path(output).resolve() if Path(output).is_symlink() else Path(output)
    try:
        if target.exists() and not target.is_file():
            with target.open("w") as out:  # /dev/null, a FIFO: never replaced by a file
                out.writelines(pieces)
        else:
            write_atomically(target, pieces)
    except OSError as exc:
        raise NcebpfError(f"could not write {output}: {exc.strerror or exc} (give --output a "
                          "file in a directory you can write, or - for standard output)"
                          ) from None


@main.command()
@click.argument("sources", nargs=-1, metavar="[SOURCE]...")
@click.option("--by", type=click.Choice(BY_CHOICES), default="cidr",
              show_default=True,
              help="Group peers by prefix (--cidr4/--cidr6), by registrable domain of their "
                   "name, or not at all.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True,
              help="text: upstream's layout (SSI pages keep working); html: one "
                   "self-contained page with charts; json: for scripts.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Write the report to this file (atomically) instead of standard output.")
@click.option("--cidr4", type=click.IntRange(0, 32), default=24, show_default=True,
              metavar="N", help="IPv4 prefix length of --by cidr.")
@click.option("--cidr6", type=click.IntRange(0, 128), default=48, show_default=True,
              metavar="N", help="IPv6 prefix length of --by cidr.")
@click.option("--top", type=click.IntRange(min=1), default=None, metavar="N",
              help="Show the first N groups only (the totals still cover all).")
@click.option("--sort", type=click.Choice(SORT_CHOICES),
              default="bandwidth", show_default=True,
              help="Order of the groups, highest first: bytes/s as shown (upstream's "
                   "order), hits/h, number of peers, last contact, or the exact counts "
                   "(which order a report from the start; the hourly rates stay 0 for the "
                   "first five minutes).")
@click.option("--domain-rule", type=click.Choice(DOMAIN_RULES), default="psl",
              show_default=True,
              help="--by domain: the registrable domain from the Public Suffix List, or "
                   "upstream's key and its /24 rows (every *.co.uk in one row).")
@click.option("--timeout", type=TIMEOUT, default=30.0, show_default=True,
              help="Give up after this many seconds: without SOURCE, of silence from the "
                   "instance; with ssh:// sources, for all of them together.")
@click.option("--hosts", "hosts_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Read more SOURCEs from FILE, one a line (# comments).")
@click.option("--partial-ok", is_flag=True,
              help="Exit 0 when some sources gave no dump (the report names them and says "
                   "it is partial) [default: exit 1].")
@click.option("--ssh-config", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              metavar="FILE", help="ssh_config(5) file for ssh:// sources: keys, known "
                                   "hosts, jump hosts [default: ~/.ssh/config].")
@click.option("--remote-ncebpf", default="ncebpf", show_default=True, metavar="COMMAND",
              help="How ssh:// hosts start ncebpf, as their shell reads it: "
                   "/opt/ncebpf/bin/ncebpf, 'sudo -n ncebpf'.")
@history_range_options
@instance_options
def report(sources: tuple[str, ...], by: str, fmt: str, output: str, cidr4: int, cidr6: int,
           top: int | None, sort: str, domain_rule: str, timeout: float,
           hosts_file: Path | None, partial_ok: bool, ssh_config: Path | None,
           remote_ncebpf: str, since: str | None, until: str | None, history: str | None,
           hosts: tuple[str, ...], name: str, config_file: Path | None, statedir: str | None,
           piddir: str | None, bpffs: str | None) -> None:
    """Who used the link: peers grouped by prefix, domain or peer, busiest first.

    SOURCE is a dump: ncebpf's JSON or .stats, or a .stats file of the Perl
    daemon (read as data, never run). Without SOURCE the running instance
    (--name) is asked for a fresh dump, as 'ncebpf dump' does. With --since
    the report covers a time range from the history database instead: rates
    are the range's averages, counts its sums.

    SOURCE may also be ssh://[user@]host[:port][/NAME]: ssh (BatchMode, keys
    only) runs 'ncebpf dump' for instance NAME on that host, all hosts at
    once. Several SOURCEs make one report: a peer's counts summed over them,
    each host's totals in the header. A source that gives no dump is named
    with its error, the report says it is partial, and the exit status is 1
    (unless --partial-ok).

    \b
      ncebpf report                          # /24s of the running instance
      ncebpf report --by domain /var/lib/ncebpf/ncebpf.json
      ncebpf report --format html -o /var/www/html/link.html
      ncebpf report ssh://gw1 ssh://root@gw2:2222/uplink --by peer
      ncebpf report --hosts /etc/ncebpf/fleet --format html -o fleet.html
      ncebpf report --since 24h --by peer    # the last day, from the history
      ncebpf report --since 2026-11-01 --until 2026-11-08 --format html -o week.html
    """
    from ncebpf.errors import UsageError
    from ncebpf.report import render
    from ncebpf.report.aggregate import aggregate
    from ncebpf.report.fleet import read_hosts_file
    from ncebpf.report.model import By, DomainRule, Options, Sort
    from ncebpf.report.sources import from_instance, read_dump

    listed = [*sources, *(read_hosts_file(hosts_file) if hosts_file is not None else [])]
    if hosts_file is not None and not listed:
        raise UsageError(f"--hosts {hosts_file}: no sources in it (one a line)")
    if since is not None or until is not None or history is not None or hosts:
        if listed:
            raise UsageError("give a SOURCE or --since, not both: a range comes from the "
                             "history database")
        url, snapshot = _history_snapshot(since, until, history, hosts, name, config_file,
                                          statedir)
    elif len(listed) > 1 or any(source.startswith("ssh://") for source in listed):
        url, snapshot = "", _fleet_snapshot(listed, ssh_config, remote_ncebpf, timeout)
    else:
        url, snapshot = "", read_dump(Path(listed[0])) if listed else \
            from_instance(_instance(name, config_file, statedir, piddir, bpffs), timeout)
    options = Options(by=cast(By, by), cidr4=cidr4, cidr6=cidr6,
                      domain_rule=cast(DomainRule, domain_rule), sort=cast(Sort, sort), top=top)
    result = aggregate(snapshot, options)
    if url and fmt == "html":
        from ncebpf.history.query import with_time_series

        result = with_time_series(result, url, hosts)
    _write_output(output, [render(result, fmt)])
    if snapshot.failures:
        _partial(snapshot, partial_ok)


def _fleet_snapshot(listed: list[str], ssh_config: Path | None, remote_ncebpf: str,
                    timeout: float) -> Any:
    """The sources' dumps fetched (ssh:// all at once) and merged into one snapshot."""
    from ncebpf.errors import UsageError
    from ncebpf.report.fleet import SshOptions, fetch, parse_source, same_source
    from ncebpf.report.merge import merge

    if not remote_ncebpf.strip():
        raise UsageError("--remote-ncebpf is empty: give the command that starts ncebpf on "
                         "the hosts")
    sources = [parse_source(source) for source in listed]
    seen: dict[tuple[str, ...], str] = {}
    for text, source in zip(listed, sources, strict=True):
        first = seen.setdefault(same_source(source), text)
        if first != text or listed.count(text) > 1:
            again = "is given twice" if first == text else f"is {first} again"
            raise UsageError(f"{text} {again}: its counts would be added twice")
    parts, failures = fetch(sources, SshOptions(config=ssh_config,
                                                remote_ncebpf=remote_ncebpf), timeout)
    if not parts:
        for failed, error in failures:
            click.echo(f"ncebpf: {failed}: {error}", err=True)
        raise NcebpfError(f"none of the {len(failures)} sources gave a dump: no report "
                          "(--output, if given, is left as it was)")
    return merge(parts, failures)


def _partial(snapshot: Any, partial_ok: bool) -> None:
    """After a report with failed sources: each on stderr, then exit 1 unless --partial-ok."""
    for source, error in snapshot.failures:
        click.echo(f"ncebpf: {source}: {error}", err=True)
    total = len(snapshot.parts) + len(snapshot.failures)
    click.echo(f"ncebpf: the report is partial: {len(snapshot.failures)} of {total} sources "
               "gave no dump", err=True)
    if not partial_ok:
        raise SystemExit(1)


def _history_url(history: str | None, name: str, config_file: Path | None,
                 statedir: str | None) -> str:
    """The history database to read: --history, else the one the instance's last run
    wrote to, else its configured one, else the default beside its dumps."""
    from ncebpf.errors import UsageError
    from ncebpf.history.spool import noted_database

    if history:
        return history
    instance = _instance(name, config_file, statedir, None)
    noted = noted_database(instance.history_spool)
    if noted:
        return noted
    settings = _file_settings(name, config_file)
    configured = settings.get("history")
    if configured == "off" or settings.get("no_history"):
        raise UsageError(f"instance {name} keeps no history (history = \"off\"): give "
                         "--history URL")
    if isinstance(configured, str) and configured:
        return configured
    return f"sqlite:///{instance.history_path}"


def _history_range(since: str | None, until: str | None, history: str | None, name: str,
                   config_file: Path | None, statedir: str | None) -> tuple[str, int, int]:
    """The database and the range [since, until) (epoch seconds) a command reads: --until
    defaults to now, and ends there at the latest (seconds to come hold no counts, and
    would thin the range's rates); --since defaults to a day before --until. Refuses a
    missing SQLite file and a --since in the future."""
    import time

    from ncebpf.errors import UsageError
    from ncebpf.history.query import parse_time
    from ncebpf.history.store import database_url, sqlite_path, when

    now = time.time()
    url = _history_url(history, name, config_file, statedir)
    database_url(url)  # a URL it cannot use is a usage error before anything else
    path = sqlite_path(url)
    if path is not None and not Path(path).is_file():
        raise NcebpfError(f"no history database {path}: ncebpf writes it while it counts "
                          "(unless --no-history); give --history URL for another")
    last = min(parse_time(until, now, "--until"), int(now)) if until is not None else int(now)
    first = parse_time(since, now, "--since") if since is not None else last - 86400
    if first >= int(now):
        raise UsageError(f"--since {since!r} ({when(first)}) is in the future")
    return url, first, last


def _history_snapshot(since: str | None, until: str | None, history: str | None,
                      hosts: tuple[str, ...], name: str, config_file: Path | None,
                      statedir: str | None) -> tuple[str, Any]:
    from ncebpf.history.query import history_snapshot

    url, first, last = _history_range(since, until, history, name, config_file, statedir)
    return url, history_snapshot(url, first, last, hosts)


@main.group()
def history() -> None:
    """The history database: per-peer counts in time bins (see --history of attach)."""


@history.command("export")
@click.option("--format", "fmt", type=click.Choice(("csv", "json")), default="csv",
              show_default=True, help="csv: a header line, then a row per peer and bin; json: "
                                      "an array of objects with the same fields.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Write to this file (atomically) instead of standard output.")
@history_range_options
@instance_options
def history_export(fmt: str, output: str, since: str | None, until: str | None,
                   history: str | None, hosts: tuple[str, ...], name: str,
                   config_file: Path | None, statedir: str | None, piddir: str | None,
                   bpffs: str | None) -> None:
    """Every peer's counts per bin over a range, for audits and other tools.

    Rows at the finest resolution the database still keeps: the daemon's bins
    (--history-bin, 5 minutes by default) for --keep-5m days, hourly ones for
    --keep-hourly days, daily ones before. Times are epoch seconds; a bin's
    start also in UTC ISO 8601.

    \b
      ncebpf history export --since 7d > week.csv
      ncebpf history export --since 2026-11-01 --until 2026-12-01 --format json -o nov.json
    """
    from ncebpf.history.export import export_pieces

    url, first, last = _history_range(since, until, history, name, config_file, statedir)
    _write_output(output, export_pieces(url, first, last, hosts, fmt))


@main.command()
@click.option("--iface", "-i", required=True, help="Interface to clean up.")
@instance_options
def detach(iface: str, name: str, config_file: Path | None, statedir: str | None,
           piddir: str | None, bpffs: str | None) -> None:
    """Remove ncebpf programs a killed run left on IFACE.

    Only ncebpf's own XDP program and TC filter are removed; another tool's
    programs are never touched, and neither are those of a live instance
    counting on IFACE ('ncebpf stop' detaches those).
    """
    from ncebpf.errors import UsageError
    from ncebpf.kernel.attach import detach_leftovers
    from ncebpf.kernel.privileges import require_bpf_privileges
    from ncebpf.lifecycle import running_pid
    from ncebpf.locks import InstanceLock, InterfaceBusy, InterfaceLock, describe, stop_command
    from ncebpf.remains import forget_files, forget_pinned

    require_bpf_privileges("ncebpf detach")
    try:
        with InterfaceLock(iface, name, counting=False) as held:
            removed = detach_leftovers(held)
        instance = _instance(name, config_file, statedir, piddir, bpffs)
        if running_pid(instance) is None:
            with InstanceLock(instance, tidying=True):
                if instance.pin_dir.is_dir():
                    forget_pinned(instance)
                    removed.append(f"the maps pinned in {instance.pin_dir}")
                if forget_files(instance):
                    removed.append(f"{name}'s stale files in {instance.pid_path.parent}")
    except InterfaceBusy as busy:
        if busy.owner is not None and not busy.owner.counting:
            raise  # another clean-up, for a moment
        raise UsageError(f"{iface} is counted by {describe(busy.owner)}: its programs are not "
                         f"leftovers; {stop_command(busy.owner)} stops it and removes its "
                         "programs") from None
    click.echo(f"removed from {iface}: {', '.join(removed)}" if removed
               else f"nothing of ncebpf's on {iface}")


@main.command()
@click.argument("expression", nargs=-1)
@click.option("--iface", "-i", default=None,
              help="Interface whose IPv4 netmask serves 'ip broadcast'.")
@click.option("--kernel", "kernel", is_flag=True,
              help="Print the kernel features ncebpf probes, and the path it takes "
                   "without each.")
def explain(expression: tuple[str, ...], iface: str | None, kernel: bool) -> None:
    """Show what the kernel runs for a tcpdump EXPRESSION, and whether it can.

    Prints libpcap's classic BPF, the C ncebpf generates from it, the
    verifier's verdict (its log when it refuses) with the instruction count,
    and a self-check that runs the filter in the kernel and in libpcap on
    sample frames built from the filter's own constants. The kernel part
    needs root; without it only the translation is shown.

    With --kernel (EXPRESSION then optional) it first prints each kernel
    feature ncebpf relies on, the first mainline kernel with it, whether
    this kernel has it (probed; root needed) and what ncebpf does without it.
    """
    if kernel:
        from ncebpf.kernel.features import probe, render

        click.echo(render(probe(), os.uname().release))
        if not expression:
            return
        click.echo()
    elif not expression:
        from ncebpf.errors import UsageError

        raise UsageError("explain needs a filter EXPRESSION, or --kernel")
    from ncebpf.filter.cbpf import listing
    from ncebpf.filter.pcap import PCAP_NETMASK_UNKNOWN, compile_filter
    from ncebpf.filter.samples import sample_frames
    from ncebpf.filter.translate import UnsupportedFilter, translate

    text = " ".join(expression)
    if iface:
        from ncebpf.kernel.netif import ipv4_netmask

        netmask = ipv4_netmask(iface)
    else:
        netmask = PCAP_NETMASK_UNKNOWN
    insns = compile_filter(text, netmask)
    click.echo(f"filter: {text}\n\nclassic BPF from libpcap, {len(insns)} instructions:")
    click.echo(listing(insns))
    try:
        translation = translate(insns)
    except UnsupportedFilter as exc:
        click.echo(f"\n{exc}")
        raise click.exceptions.Exit(2) from exc
    click.echo("\ngenerated C (ncebpf_filter.h):")
    click.echo(translation.c_source.rstrip())
    from ncebpf.kernel.privileges import require_bpf_privileges

    try:
        require_bpf_privileges("the kernel check")
        from ncebpf.kernel.build import import_bcc
        from ncebpf.kernel.check import check_filter
        from ncebpf.kernel.features import probe

        import_bcc()
        refusal = probe().kernel_path_refusal()
    except NcebpfError as exc:
        click.echo(f"\nkernel: not checked: {exc}")
        return
    if refusal:  # the programs would not load: say why, not the verifier's log
        click.echo(f"\nkernel: not checked: {refusal}")
        return
    frames = sample_frames(insns)
    check = check_filter(translation, insns, frames)
    if not check.accepted:
        click.echo(f"\nkernel: REJECTED\n{check.log.rstrip()}")
        raise click.exceptions.Exit(1)
    click.echo(f"\nkernel: accepted; the filter's test program is {check.xlated_insns} "
               "eBPF instructions")
    if check.disagreements:
        click.echo(f"self-check: kernel and libpcap DISAGREE on {len(check.disagreements)} "
                   f"of {check.frames} sample frames:")
        for frame, kernel, pcap in check.disagreements[:5]:
            click.echo(f"  kernel {'match' if kernel else 'no match'}, libpcap "
                       f"{'match' if pcap else 'no match'}: {frame.hex()}")
        raise click.exceptions.Exit(1)
    click.echo(f"self-check: kernel and libpcap agree on all {check.frames} sample frames "
               f"({check.matches} match)")
