"""Command line: parse, call, print. Nothing else lives here."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ncebpf import __version__
from ncebpf.config import (
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_PEERS,
    DEFAULT_NAME,
    DEFAULT_PIDDIR,
    DEFAULT_STATEDIR,
    Instance,
    RunConfig,
)
from ncebpf.errors import NcebpfError

F = TypeVar("F", bound=Callable[..., Any])


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


def instance_options(command: F) -> F:
    """--name, --statedir and --piddir: the same on every command."""
    for option in reversed([
        click.option("--name", default=DEFAULT_NAME, show_default=True,
                     help="Instance name; several instances run side by side."),
        click.option("--statedir", type=click.Path(path_type=Path), default=DEFAULT_STATEDIR,
                     show_default=True, help="Directory for dumps (<name>.json)."),
        click.option("--piddir", type=click.Path(path_type=Path), default=DEFAULT_PIDDIR,
                     show_default=True,
                     help="Directory for <name>.pid and the control socket <name>.sock."),
    ]):
        command = option(command)
    return command


def _instance(name: str, statedir: Path, piddir: Path) -> Instance:
    return Instance(name=name, statedir=statedir, piddir=piddir)


def _filter_expression(option: str, words: tuple[str, ...]) -> str:
    if option and words:
        raise click.UsageError("give the filter once: with --filter or as trailing arguments")
    return option or " ".join(words)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ncebpf")
@click.option("--debug", is_flag=True, help="Log details and show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Count network traffic per remote IP address, inside the kernel.

    An XDP program (ingress) and a TC program (egress) add every IPv4 and IPv6
    frame to a counter for its peer, the address on the far side. A peer's
    packets and bytes are exact: nothing is sampled, nothing is lost.

    \b
    Typical use, as root:
      ncebpf attach --iface eth0            # runs in the foreground
      ncebpf dump --format json             # from another shell
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="ncebpf: %(message)s", stream=sys.stderr)


@main.command()
@click.option("--iface", "-i", required=True, help="Interface to count on, e.g. eth0.")
@click.option("--direction", type=click.Choice(["both", "ingress", "egress"]), default="both",
              show_default=True, help="Ingress is counted by XDP, egress by TC.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=DEFAULT_INTERVAL_S,
              show_default=True, help="Seconds between drains of the kernel counters.")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]), default="auto",
              show_default=True,
              help="auto: native (driver) XDP where supported, else generic.")
@click.option("--max-peers", type=click.IntRange(min=1, max=1 << 26), default=DEFAULT_MAX_PEERS,
              show_default=True,
              help="Peer map capacity; frames of further new peers count as overflow.")
@click.option("--force", is_flag=True,
              help="Displace another XDP program on the interface for this run.")
@click.option("--filter", "filter_option", metavar="EXPR", default="",
              help="tcpdump filter expression; or give it as trailing arguments.")
@click.argument("expression", nargs=-1)
@instance_options
def attach(iface: str, direction: str, interval: float, xdp_mode: str, max_peers: int,
           force: bool, filter_option: str, expression: tuple[str, ...], name: str,
           statedir: Path, piddir: Path) -> None:
    """Attach to IFACE and count until SIGTERM or Ctrl-C.

    Only frames that match EXPRESSION, a tcpdump filter (pcap-filter(7)), are
    counted; it runs inside the kernel. Its first `host` joins the interface's
    addresses on the local side of the peer rule. Example:

    \b
      ncebpf attach --iface eth0 'udp port 53 and dst host 10.1.2.3'

    On exit ncebpf writes a final dump and removes exactly what it attached.
    A program that a killed run left behind is replaced; another tool's XDP
    program is left alone unless --force is given.
    """
    from ncebpf.daemon import Daemon

    config = RunConfig(iface=iface, instance=_instance(name, statedir, piddir),
                       filter=_filter_expression(filter_option, expression),
                       direction=direction,  # type: ignore[arg-type]
                       interval_s=interval, xdp_mode=xdp_mode,  # type: ignore[arg-type]
                       force=force, max_peers=max_peers)
    Daemon(config).run()


@main.command()
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True,
              help="Dump format.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Write the dump to this file instead of standard output.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for the instance to write the dump.")
@instance_options
def dump(fmt: str, output: str, timeout: float, name: str, statedir: Path, piddir: Path) -> None:
    """Ask the running instance for a fresh dump and print it.

    Returns only once the instance has drained its counters and written
    <statedir>/<name>.json.
    """
    from ncebpf.control import request_dump
    from ncebpf.dump import write_atomically

    path = request_dump(_instance(name, statedir, piddir), fmt, timeout)
    text = path.read_text()
    if output == "-":
        click.echo(text, nl=False)
    else:
        write_atomically(Path(output), text)


@main.command()
@click.option("--iface", "-i", required=True, help="Interface to clean up.")
@instance_options
def detach(iface: str, name: str, statedir: Path, piddir: Path) -> None:
    """Remove ncebpf programs a killed run left on IFACE.

    Only ncebpf's own XDP program and TC filter are removed; another tool's
    programs are never touched.
    """
    from ncebpf.control import ensure_not_running
    from ncebpf.kernel.attach import detach_leftovers
    from ncebpf.kernel.privileges import require_bpf_privileges

    require_bpf_privileges("ncebpf detach")
    # A running instance detaches itself on SIGTERM; never pull programs from under it.
    ensure_not_running(_instance(name, statedir, piddir))
    removed = detach_leftovers(iface)
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
    from ncebpf.errors import NcebpfError
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
