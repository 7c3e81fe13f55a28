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
@instance_options
def attach(iface: str, direction: str, interval: float, xdp_mode: str, max_peers: int,
           force: bool, name: str, statedir: Path, piddir: Path) -> None:
    """Attach to IFACE and count until SIGTERM or Ctrl-C.

    On exit ncebpf writes a final dump and removes exactly what it attached.
    A program that a killed run left behind is replaced; another tool's XDP
    program is left alone unless --force is given.
    """
    from ncebpf.daemon import Daemon

    config = RunConfig(iface=iface, instance=_instance(name, statedir, piddir),
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
