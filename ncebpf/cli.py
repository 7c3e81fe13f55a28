"""Command line: parse, call, print. Nothing else lives here."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ncebpf import __version__
from ncebpf.config import (
    DEFAULT_NAME,
    DEFAULT_PIDDIR,
    DEFAULT_STATEDIR,
    Instance,
    RunConfig,
    default_config_path,
    read_file,
)
from ncebpf.errors import NcebpfError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_DEAD = 1  # LSB: program is dead and /var/run pid file exists
EXIT_NOT_RUNNING = 3  # LSB: program is not running


class _ExitError(click.ClickException):
    def __init__(self, error: NcebpfError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click declares it ClassVar


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    hint = " (run as root, or choose --statedir/--piddir you can write)" \
        if isinstance(exc, PermissionError) else ""
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


instance_options = _options(
    click.option("--name", default=DEFAULT_NAME, show_default=True,
                 help="Instance name; several instances run side by side."),
    click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                 help="TOML configuration [default: /etc/ncebpf/<name>.toml if it exists]."),
    click.option("--statedir", type=click.Path(path_type=Path), default=None,
                 help=f"Directory for dumps <name>.stats and <name>.json "
                      f"[default: {DEFAULT_STATEDIR}]."),
    click.option("--piddir", type=click.Path(path_type=Path), default=None,
                 help=f"Directory for <name>.pid and the control socket [default: "
                      f"{DEFAULT_PIDDIR}]."),
)

run_options = _options(
    click.option("--iface", "-i", default=None,
                 help="Interface to count on [default: the one that has, or neighbours, "
                      "the filter's first host]."),
    click.option("--filter", "filter_option", metavar="EXPR", default=None,
                 help="tcpdump filter expression; or give it as trailing arguments."),
    click.option("--mode", type=click.Choice(["auto", "xdp", "tc", "pcap"]), default=None,
                 help="xdp: XDP ingress + TC egress; tc: TC on both hooks; pcap: libpcap "
                      "capture; auto: the kernel unless it cannot [default: auto]."),
    click.option("--direction", type=click.Choice(["both", "ingress", "egress"]), default=None,
                 help="Ingress is counted by XDP, egress by TC [default: both]."),
    click.option("--interval", type=click.FloatRange(min=0.05), default=None,
                 help="Seconds between drains of the kernel counters [default: 5]."),
    click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]), default=None,
                 help="auto: native (driver) XDP where supported, else generic."),
    click.option("--max-peers", type=click.IntRange(min=1, max=1 << 26), default=None,
                 help="Peer map capacity; frames of further new peers count as overflow "
                      "[default: 1048576]."),
    click.option("--force", is_flag=True, default=None,
                 help="Displace another XDP program on the interface for this run."),
    click.option("--match", default=None, metavar="TEXT",
                 help="Count only frames whose payload window contains TEXT (any case)."),
    click.option("--nomatch", default=None, metavar="TEXT",
                 help="Count only frames whose payload window does not contain TEXT."),
    click.option("--payload", type=int, default=None,
                 help="Start of the payload window, in bytes from the frame's start."),
    click.option("--snaplen", type=int, default=None,
                 help="End of the payload window [default: 38]."),
    click.option("--port", default=None, help="UDP port for `dump` requests [default: off]."),
    click.option("--listen", default=None,
                 help="Address the dump listener binds [default: 127.0.0.1]."),
    click.option("--allow", multiple=True,
                 help="Host allowed to request dumps; repeatable [default: this host]."),
    click.option("--resolver", multiple=True, metavar="ADDR[:PORT]",
                 help="DNS server for peer names; repeatable, tried in turn "
                      "[default: /etc/resolv.conf]."),
    click.option("--no-resolve", "resolve", flag_value=False, default=None,
                 help="Do not look up peer names."),
    click.option("--dns-rate", type=click.FloatRange(min=0.1), default=None,
                 help="At most this many name lookups per second [default: 20]."),
    click.argument("expression", nargs=-1),
    instance_options,
)

# click parameter -> configuration setting
_SETTINGS = {"iface": "iface", "mode": "mode", "direction": "direction", "interval": "interval_s",
             "xdp_mode": "xdp_mode", "max_peers": "max_peers", "force": "force",
             "match": "match", "nomatch": "nomatch", "payload": "payload",
             "snaplen": "snaplen", "port": "port", "listen": "listen", "statedir": "statedir",
             "piddir": "piddir", "resolve": "resolve", "dns_rate": "dns_rate"}


def _file_settings(name: str, config_file: Path | None) -> dict[str, Any]:
    if config_file is not None:
        return read_file(config_file)
    default = default_config_path(name)
    return read_file(default) if default.is_file() else {}


def _instance(name: str, config_file: Path | None, statedir: Path | None,
              piddir: Path | None) -> Instance:
    """Where an instance keeps its files, without validating the rest of its configuration."""
    settings = _file_settings(name, config_file)
    return Instance(name,
                    Path(statedir or settings.get("statedir") or DEFAULT_STATEDIR).absolute(),
                    Path(piddir or settings.get("piddir") or DEFAULT_PIDDIR).absolute())


def _run_config(ctx: click.Context) -> RunConfig:
    """Defaults, then the TOML file, then the flags given on the command line."""
    from ncebpf.config import build
    from ncebpf.filter.host import resolve
    from ncebpf.kernel.netif import all_addresses

    params = ctx.params
    settings = _file_settings(params["name"], params["config_file"])
    for param, setting in _SETTINGS.items():
        if ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE:
            settings[setting] = params[param]
    if params["allow"]:
        settings["allow"] = params["allow"]
    if params["resolver"]:
        settings["resolvers"] = params["resolver"]
    words = " ".join(params["expression"])
    if params["filter_option"] is not None and words:
        raise click.UsageError("give the filter once: with --filter or as trailing arguments")
    if params["filter_option"] is not None or words:
        settings["filter"] = params["filter_option"] if params["filter_option"] is not None \
            else words
    return build(settings, params["name"], all_addresses(), resolve)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ncebpf")
@click.option("--debug", is_flag=True, help="Log details and show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Count network traffic per remote IP address, inside the kernel.

    An XDP program (ingress) and a TC program (egress) add every IPv4 and IPv6
    frame that passes a tcpdump filter to a counter for its peer, the address
    on the far side. Counts are exact: nothing is sampled, nothing is lost.

    \b
    Typical use, as root:
      ncebpf attach --iface eth0 'udp port 53'   # in the foreground
      ncebpf start --iface eth0                  # or as a daemon
      ncebpf dump --format json                  # a fresh dump, once written
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="ncebpf: %(message)s", stream=sys.stderr)


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
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait before SIGKILL.")
def stop(name: str, config_file: Path | None, statedir: Path | None, piddir: Path | None,
         timeout: float) -> None:
    """Stop a background instance: SIGTERM, then SIGKILL after --timeout."""
    from ncebpf import lifecycle

    click.echo(lifecycle.stop(_instance(name, config_file, statedir, piddir), timeout))


@main.command()
@run_options
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for the old daemon before SIGKILL.")
@click.pass_context
def restart(ctx: click.Context, /, timeout: float, **_: Any) -> None:
    """Stop, wait until gone, start: never two daemons at once."""
    from ncebpf import lifecycle
    from ncebpf.kernel.privileges import require_capture_privileges

    require_capture_privileges("ncebpf restart")
    config = _run_config(ctx)
    click.echo(lifecycle.stop(config.instance, timeout))
    click.echo(f"{config.instance.name} started, pid {lifecycle.start(config)}")


@main.command()
@instance_options
def status(name: str, config_file: Path | None, statedir: Path | None,
           piddir: Path | None) -> None:
    """Say whether the instance runs: exit 0 running, 3 not running, 1 dead.

    Dead: it was killed (kill -9, the OOM killer) and left its programs on
    the interface; 'ncebpf stop' removes them.
    """
    from ncebpf.lifecycle import running_pid
    from ncebpf.remains import find

    instance = _instance(name, config_file, statedir, piddir)
    pid = running_pid(instance)
    if pid is not None:
        click.echo(f"{name} running, pid {pid}")
        return
    remains = find(instance)
    stop = f"run 'ncebpf stop --name {name}'"
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
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for the instance to write the dump.")
@instance_options
def dump(fmt: str, output: str, timeout: float, name: str, config_file: Path | None,
         statedir: Path | None, piddir: Path | None) -> None:
    """Ask the running instance for a fresh dump and print it.

    Returns only once the instance has drained its counters and written
    <statedir>/<name>.json and <name>.stats.
    """
    from ncebpf.control import request_dump
    from ncebpf.dump import write_atomically

    path = request_dump(_instance(name, config_file, statedir, piddir), fmt, timeout)
    text = path.read_text()
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_atomically(Path(output), text)


@main.command()
@click.option("--iface", "-i", required=True, help="Interface to clean up.")
@instance_options
def detach(iface: str, name: str, config_file: Path | None, statedir: Path | None,
           piddir: Path | None) -> None:
    """Remove ncebpf programs a killed run left on IFACE.

    Only ncebpf's own XDP program and TC filter are removed; another tool's
    programs are never touched, and neither are those of a live instance
    counting on IFACE ('ncebpf stop' detaches those).
    """
    from ncebpf.errors import UsageError
    from ncebpf.kernel.attach import detach_leftovers
    from ncebpf.kernel.privileges import require_bpf_privileges
    from ncebpf.locks import InterfaceBusy, InterfaceLock, describe, stop_command

    require_bpf_privileges("ncebpf detach")
    try:
        with InterfaceLock(iface, name, counting=False) as held:
            removed = detach_leftovers(held)
    except InterfaceBusy as busy:
        if busy.owner is not None and not busy.owner.counting:
            raise  # another clean-up, for a moment
        raise UsageError(f"{iface} is counted by {describe(busy.owner)}: its programs are not "
                         f"leftovers; {stop_command(busy.owner)} stops it and removes its "
                         "programs") from None
    click.echo(f"removed from {iface}: {', '.join(removed)}" if removed
               else f"nothing of ncebpf's on {iface}")


@main.command()
@click.argument("expression", nargs=-1, required=True)
@click.option("--iface", "-i", default=None,
              help="Interface whose IPv4 netmask serves 'ip broadcast'.")
def explain(expression: tuple[str, ...], iface: str | None) -> None:
    """Show what the kernel runs for a tcpdump EXPRESSION, and whether it can.

    Prints libpcap's classic BPF, the C ncebpf generates from it, the
    verifier's verdict (its log when it refuses) with the instruction count,
    and a self-check that runs the filter in the kernel and in libpcap on
    sample frames built from the filter's own constants. The kernel part
    needs root; without it only the translation is shown.
    """
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

        import_bcc()
    except NcebpfError as exc:
        click.echo(f"\nkernel: not checked: {exc}")
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
