"""The attach loop: load, attach, drain every interval, answer dump requests, undo on exit."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from ncebpf.accounting import PeerTable
from ncebpf.collector import Collector
from ncebpf.config import Instance, RunConfig
from ncebpf.control import ControlServer, ensure_not_running
from ncebpf.dump import DumpContext, json_document, render_json, write_atomically
from ncebpf.errors import InterfaceNotFound, NcebpfError
from ncebpf.filter import prepare
from ncebpf.kernel.attach import TcEgressAttachment, XdpAttachment, refuse_foreign_xdp
from ncebpf.kernel.build import BuildOptions, import_bcc, loaded_programs
from ncebpf.kernel.maps import KernelCounterSource
from ncebpf.kernel.netif import ifindex_of, interface_addresses, ipv4_netmask
from ncebpf.kernel.privileges import require_bpf_privileges

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_signals() -> Iterator[socket.socket]:
    """A socket that becomes readable when SIGTERM or SIGINT arrives.

    The handlers only record the signal; the loop acts on it at a point where
    stopping is safe, so a dump is never cut off halfway.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)

    def note(signum: int, frame: FrameType | None) -> None:
        pass  # the wakeup fd carries the signal number

    previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(writer.fileno())
    try:
        yield reader
    finally:
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.close()
        writer.close()


@contextmanager
def pid_file(path: Path) -> Iterator[None]:
    write_atomically(path, f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()


class Daemon:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.instance: Instance = config.instance
        self._filter_hosts: tuple[str, ...] = ()

    def run(self) -> None:
        config = self.config
        require_bpf_privileges("ncebpf attach")
        ifindex_of(config.iface)
        if config.ingress and not config.force:
            refuse_foreign_xdp(config.iface)  # before the compile: fail fast
        import_bcc()
        for directory in (self.instance.statedir, self.instance.piddir):
            directory.mkdir(parents=True, exist_ok=True)

        ensure_not_running(self.instance)
        prepared = prepare(config.filter, ipv4_netmask(config.iface)) if config.filter else None
        self._filter_hosts = prepared.local_hosts if prepared else ()
        if prepared:
            log.info("filter %r: %d cBPF instructions%s", config.filter,
                     prepared.translation.cbpf_insns,
                     f"; local side also {', '.join(self._filter_hosts)}"
                     if self._filter_hosts else "")
        with ExitStack() as stack:
            stack.enter_context(pid_file(self.instance.pid_path))
            options = BuildOptions(max_peers=config.max_peers,
                                   filter=prepared.translation if prepared else None)
            programs = stack.enter_context(loaded_programs(options))
            log.info("compiled and loaded in %.2f s", programs.compile_seconds)
            source = KernelCounterSource(programs)
            log.debug("kernel clock: HZ %g", source.clock.hz)
            # Preallocated and per CPU: this grows with the CPU count, not with traffic.
            log.info("peer map: up to %d peers in %.0f MiB of kernel memory (--max-peers)",
                     source.capacity, source.memory_bytes / (1 << 20))
            source.set_local_addresses(self._local_addresses())
            table = PeerTable(start=time.time())
            collector = Collector(source, table)
            signals = stack.enter_context(stop_signals())
            with ExitStack() as attached:
                if config.ingress:
                    attached.enter_context(XdpAttachment(config.iface, programs.xdp.fd,
                                                         config.xdp_mode, config.force))
                if config.egress:
                    attached.enter_context(TcEgressAttachment(config.iface, programs.tc.fd,
                                                              programs.tc.name.decode()))
                # Listening on the control socket is the sign that we are counting.
                control = attached.enter_context(ControlServer(self.instance))
                vanished = self._loop(control, signals, collector, source, table)
            # Detached: the counters no longer move, so this last drain is complete.
            collector.drain()
            path = self._write_dump(table)
            if vanished:
                raise NcebpfError(f"{config.iface} disappeared; the final dump is in {path}")
            log.info("detached from %s; final dump in %s", config.iface, path)

    def _loop(self, control: ControlServer, signals: socket.socket, collector: Collector,
              source: KernelCounterSource, table: PeerTable) -> bool:
        """Run until a stop signal (False) or until the interface disappears (True)."""
        interval = self.config.interval_s
        next_drain = time.monotonic() + interval
        while True:
            timeout = max(0.0, next_drain - time.monotonic())
            ready, _, _ = select.select([control.fileno(), signals.fileno()], [], [], timeout)
            if signals.fileno() in ready:
                with contextlib.suppress(BlockingIOError):
                    received = signals.recv(64)
                    if any(sig in received for sig in STOP_SIGNALS):
                        log.info("stopping on signal")
                        return False
            if control.fileno() in ready:
                self._serve(control, collector, table)
            if time.monotonic() >= next_drain:
                report = collector.drain()
                log.debug("drained %d entries (%d changed, %d evicted) in %.3f s",
                          report.entries, report.changed, report.evicted, report.seconds)
                try:
                    source.set_local_addresses(self._local_addresses())
                except InterfaceNotFound:
                    return True
                next_drain = max(next_drain + interval, time.monotonic())

    def _local_addresses(self) -> list[str]:
        """The peer rule's local side: the interface's addresses and the filter's host."""
        return [*interface_addresses(self.config.iface), *self._filter_hosts]

    def _serve(self, control: ControlServer, collector: Collector, table: PeerTable) -> None:
        request = control.accept()
        if request is None:
            return
        conn, line = request
        with conn:
            if line != "dump json":
                reply = f"error unknown request {line[:40]!r}"
            else:
                collector.drain()
                reply = f"ok {self._write_dump(table)}"
            with contextlib.suppress(OSError):
                conn.sendall(reply.encode() + b"\n")

    def _write_dump(self, table: PeerTable) -> Path:
        context = DumpContext(name=self.instance.name, device=self.config.iface, mode="xdp",
                              filter=self.config.filter)
        path = self.instance.json_path
        write_atomically(path, render_json(json_document(table, context, time.time())))
        return path
