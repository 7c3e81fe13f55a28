"""The counting loop: load, attach, drain, dump on request, purge, undo on exit.

Signals, as upstream (spec §4.1) but without its races: TERM, INT and QUIT
end the run with a final dump, written and renamed into place after the
programs are detached; HUP writes a dump and starts over; USR1 writes a
dump. A TERM that arrives together with a HUP wins (§15.13).

Dumps and checkpoints are written by a worker thread from copies the loop
takes (ncebpf.outputs), so the loop drains and answers while they are written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from types import FrameType

from ncebpf import checkpoint
from ncebpf.accounting import PeerTable
from ncebpf.collector import Collector
from ncebpf.config import Instance, RunConfig, http_endpoint
from ncebpf.control import ChangesRequest, ControlServer
from ncebpf.dump import DumpContext, totals_document, write_atomically
from ncebpf.dumpfiles import (
    DumpWriter,
    OutputError,
    file_mode,
    scratch_files,
    shared_directory,
)
from ncebpf.errors import (
    AttachError,
    BccMissing,
    InterfaceNotFound,
    NcebpfError,
    PrivilegeError,
    UsageError,
)
from ncebpf.export.ipfix import IpfixExporter
from ncebpf.export.prometheus import Metrics
from ncebpf.files import read_small_file
from ncebpf.filter import PreparedFilter, prepare
from ncebpf.filter.host import local_hosts
from ncebpf.filter.pcap import DLT_EN10MB
from ncebpf.filter.translate import UnsupportedFilter
from ncebpf.history.sink import HistoryOptions, HistorySink, resumed_from
from ncebpf.history.store import DAY_S, Retention, Source
from ncebpf.http import ReportServer, fetch_from_instance, is_loopback
from ncebpf.kernel import pins
from ncebpf.kernel.attach import (
    HookPlan,
    TcAttachment,
    XdpAttachment,
    detach_unused_hooks,
    plan_hooks,
    refuse_foreign_xdp,
)
from ncebpf.kernel.build import (
    BuildOptions,
    LoadedPrograms,
    PayloadOptions,
    import_bcc,
    loaded_programs,
)
from ncebpf.kernel.features import MASK_VARIABLE, KernelFeatures, masked_names, probe
from ncebpf.kernel.maps import KernelCounterSource
from ncebpf.kernel.netif import (
    ifindex_of,
    ipv4_netmask,
    link_dlt,
    link_of,
    local_side,
    promiscuous,
    rx_vlan_offload,
)
from ncebpf.kernel.privileges import require_bpf_privileges
from ncebpf.listener import DumpListener, allowed_or_default
from ncebpf.locks import InstanceLock, InterfaceLock
from ncebpf.memory import return_large_blocks
from ncebpf.outputs import (
    PROGRESS_EVERY_S,
    Checkpointer,
    ControlWaiter,
    DumpService,
    DumpWaiter,
    UdpWaiter,
    WrittenDump,
)
from ncebpf.payload import fold, kernel_limits, parse_needle
from ncebpf.pcap import PcapSource
from ncebpf.remains import detach_kept, kept_programs_line
from ncebpf.resolve import ReverseResolver, parse_server, system_servers
from ncebpf.sdnotify import extend_stop_timeout, notify
from ncebpf.top.feed import ChangeFeed
from ncebpf.top.serve import TopService
from ncebpf.top.wire import Header
from ncebpf.worker import Worker

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# USR2: stop, but leave the programs counting into the pinned maps (stop --keep, restart).
KEEP_SIGNAL = signal.SIGUSR2
HANDLED_SIGNALS = (*STOP_SIGNALS, KEEP_SIGNAL, signal.SIGHUP, signal.SIGUSR1)
PURGE_EVERY_S = 60.0
DUMP_SHARING_S = 1.0  # UDP requests this close to a dump share it
HTTP_FETCH_TIMEOUT_S = 30.0  # the instance's silence a report request waits out, as `dump`'s


@contextmanager
def signal_socket() -> Iterator[socket.socket]:
    """A socket that receives the number of each handled signal.

    The handlers only record the signal; the loop acts on it where acting
    is safe, so a dump is never cut off halfway.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)

    def note(signum: int, frame: FrameType | None) -> None:
        pass  # the wakeup fd carries the signal number

    previous = {sig: signal.signal(sig, note) for sig in HANDLED_SIGNALS}
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
def state_file(path: Path, text: str) -> Iterator[None]:
    """A small file that exists while the block runs and names this process's state."""
    write_atomically(path, text)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                path.unlink()


class Daemon:
    def __init__(self, config: RunConfig, on_ready: Callable[[], None] | None = None,
                 on_drain: Callable[[], None] | None = None) -> None:
        self.config = config
        self.instance: Instance = config.instance
        self._on_ready = on_ready
        self._on_drain = on_drain  # the background daemon follows its log file
        self._filter_hosts: tuple[str, ...] = ()
        self._mode: str = config.mode
        self._prepared: PreparedFilter | None = None
        self._dlt = DLT_EN10MB  # the link type filters are compiled for: see _choose_mode
        self._capture: PcapSource | None = None
        self._resolver: ReverseResolver | None = None
        self._history: HistorySink | None = None
        self._reread = False  # the table resumed from a checkpoint reads its counts again
        self._after_crash = False  # the last run of this instance did not end
        self._match = fold(parse_needle(config.match))
        self._nomatch = fold(parse_needle(config.nomatch))
        self._writer = DumpWriter(self.instance, DumpContext(
            name=self.instance.name, device=config.iface, mode=config.mode,
            filter=config.filter, promiscuous=config.promiscuous, match=config.match,
            nomatch=config.nomatch, payload=config.payload, snaplen=config.snaplen),
            file_mode(config.umask))
        self._hooks: HookPlan | None = None
        self._features = KernelFeatures()  # probed by _choose_mode for the kernel path
        self._local_reason = ""
        self._local_now: list[str] = []  # the last _local_addresses(): the IPFIX local side
        self._keep = False  # asked to stop with the programs left counting (KEEP_SIGNAL)
        self._programs_kept = False  # and they were: their maps are pinned
        self._pinned = False  # the counting maps are pinned in bpffs
        self._dataset = ""  # the pinned maps' data set id; '' in pcap mode and unpinned
        self._digest = ""  # what defines the data set (pins.dataset_digest)

    def run(self) -> Path:
        """Count until a stop signal; return where the final dump went.

        Raises NcebpfError when the run could not start, when the interface
        disappeared, or when the final dump could not be written where it
        belongs (the message says where the counts went).
        """
        config = self.config
        ifindex_of(config.iface)
        os.umask(config.umask)
        return_large_blocks()  # a drain's scratch memory goes back after each drain
        for what, directory in (("state", self.instance.statedir),
                                ("pid", self.instance.piddir)):
            if why := shared_directory(directory):
                log.warning("the %s directory %s is %s: others can plant files there; "
                            "ncebpf never follows links there, but give it a directory of "
                            "its own", what, directory, why)
        # First of all: a second run of this name must fail before it touches anything.
        with InstanceLock(self.instance):
            # A pid file nobody removed: the last run did not end (kill -9, OOM, power).
            self._after_crash = self.instance.pid_path.exists()
            for scratch in [*scratch_files(self.instance),  # a killed run's half-written files
                            *checkpoint.scratch_files(self.instance.checkpoint_path)]:
                with contextlib.suppress(OSError):
                    scratch.unlink()
            mode, reason = self._choose_mode()
            if reason:
                log.warning("counting with libpcap in user space, not in the kernel: %s", reason)
            try:
                return self._run(mode)
            except AttachError as exc:
                if config.mode != "auto":
                    raise
                log.warning("counting with libpcap in user space, not in the kernel: %s", exc)
                return self._run("pcap")

    def _choose_mode(self) -> tuple[str, str]:
        """The data path to use, and why it is pcap when auto had to settle for it."""
        config = self.config
        self._dlt = link_dlt(config.iface)
        if self._dlt != DLT_EN10MB:
            log.info("%s has no MAC header: frames are parsed from the IP header and the "
                     "filter is compiled for raw IP, as tcpdump does there", config.iface)
        # A test aid's typo must not pass unnoticed in a mode that probes nothing.
        masked_names(os.environ.get(MASK_VARIABLE, ""))
        if config.mode == "pcap":
            return "pcap", ""
        reason = kernel_limits(self._match, self._nomatch, config.payload, config.snaplen)
        if reason is None:
            try:
                require_bpf_privileges("the kernel path")
                self._features = probe()
                if refusal := self._features.kernel_path_refusal():
                    if config.mode != "auto":
                        raise UsageError(f"{refusal}: count with --mode pcap (or auto)")
                    return "pcap", refusal
                import_bcc()
                self._prepared = prepare(config.filter, ipv4_netmask(config.iface),
                                         self._dlt) if config.filter else None
            except (PrivilegeError, BccMissing, UnsupportedFilter) as exc:
                if config.mode != "auto":
                    raise
                reason = str(exc)
        if reason is not None:
            if config.mode != "auto":
                raise UsageError(reason)
            return "pcap", reason
        features = self._features
        payload = bool(self._match or self._nomatch)
        hooks = self._hooks = plan_hooks(
            config.mode, config.xdp_mode, config.ingress, config.egress, link_of(config.iface),
            xdp_payload_lack="" if features.bpf_xdp_load_bytes or not payload
            else features.lack("bpf_xdp_load_bytes"))
        for missing in features.missing():
            # Each fallback once, and only where it changes this run: plan_hooks says
            # the payload search's; XDP_FLAGS_REPLACE matters only with XDP attached
            # (a kernel without it is found out, and said, at the first detach).
            if missing.name == "bpf_xdp_load_bytes" or (
                    missing.name == "xdp_flags_replace" and hooks.ingress != "xdp"):
                continue
            log.warning("%s", features.fallback_line(missing.name))
        if hooks.ingress == "xdp" and not config.force:
            refuse_foreign_xdp(config.iface)  # before the compile: fail fast
        if hooks.choice:
            log.info("%s", hooks.choice)
        for note in hooks.notes:
            log.warning("%s", note)
        return hooks.mode, ""

    def _run(self, mode: str) -> Path:
        try:
            return self._count(mode)
        finally:
            if self._programs_kept:  # for `status`, `stop` and the next `start`: where they count
                with contextlib.suppress(OSError):
                    write_atomically(self.instance.iface_path, self.config.iface)

    def _count(self, mode: str) -> Path:
        config = self.config
        self._mode = mode
        self._dataset = ""
        self._pinned = False
        self._reread = False
        self._writer.context = replace(self._writer.context, mode=mode)
        prepared = self._prepared if mode != "pcap" else None
        self._filter_hosts = prepared.local_hosts if prepared else local_hosts(config.filter)
        if prepared:
            log.info("filter %r: %d cBPF instructions%s", config.filter,
                     prepared.translation.cbpf_insns,
                     f"; local side also {', '.join(self._filter_hosts)}"
                     if self._filter_hosts else "")
        with ExitStack() as stack:
            # The kernel hooks have one owner, taken before the compile; a capture shares.
            held = stack.enter_context(InterfaceLock(config.iface, self.instance.name)) \
                if mode != "pcap" else None
            stack.enter_context(state_file(self.instance.pid_path, f"{os.getpid()}\n"))
            # Where an earlier run (stop --keep, or killed) left its programs counting.
            previous = (read_small_file(self.instance.iface_path) or "").strip()
            elsewhere = previous if previous and (previous != config.iface or mode == "pcap") \
                else ""
            # Before the attach, so that `stop` finds what a kill in between leaves.
            stack.enter_context(state_file(self.instance.iface_path, config.iface))
            source: KernelCounterSource | PcapSource
            options = self._build_options(prepared)
            new_maps = True
            if mode == "pcap":
                self._digest = pins.dataset_digest(options, "pcap:" + config.filter)
                if elsewhere:
                    kept = self._detach_kept(elsewhere)
                    with contextlib.suppress(OSError):  # a read-only bpffs keeps them
                        pins.unpin(self.instance.pin_dir)  # no kernel run of this data set follows
                    if kept is not None:
                        log.warning("%s", kept_programs_line(elsewhere, config.iface, mode,
                                                             *kept, carried=False))
                source = stack.enter_context(PcapSource(
                    config.iface, config.filter, ipv4_netmask(config.iface), config.promiscuous,
                    self._match, self._nomatch, config.payload, config.snaplen,
                    config.max_peers, self._dlt))
                programs = None
            else:
                self._digest = pins.dataset_digest(options, config.filter)
                kept = self._detach_kept(elsewhere) if elsewhere else None
                meta_before = pins.read_meta(self.instance.pin_dir) if kept else None
                try:
                    pins.prepare_pinning(self.instance.bpffs, self.instance.pin_dir,
                                         self._digest)
                    options = replace(options, pin_dir=self.instance.pin_dir)
                    self._pinned = True
                except pins.PinError as exc:
                    # Counting matters more than continuity: on, unpinned, said once.
                    log.warning("%s", pins.unpinned_warning(self.instance.pin_dir, exc,
                                                            self.instance.bpffs))
                programs = stack.enter_context(loaded_programs(options))
                log.info("compiled and loaded in %.2f s", programs.compile_seconds)
                if self._pinned:
                    meta, new_maps = pins.claim(programs, self._digest)
                    self._dataset = meta.name
                if kept is not None:
                    carried = not new_maps and meta_before is not None and \
                        meta_before.name == self._dataset
                    log.warning("%s", kept_programs_line(elsewhere, config.iface, mode, *kept,
                                                         carried=carried))
                source = KernelCounterSource(programs, self._features)
                # Preallocated and per CPU: this grows with the CPU count, not with traffic.
                log.info("peer map: up to %d peers in %.0f MiB of kernel memory (--max-peers)",
                         source.capacity, source.memory_bytes / (1 << 20))
            source.set_local_addresses(self._local_addresses())
            self._resolver = self._start_resolver()
            # Without a resolver nobody takes the new peers: do not collect them.
            extras: checkpoint.Extras = {}
            table = self._resume(new_maps, self._resolver is not None, extras)
            if self._resolver is not None:
                stack.callback(self._resolver.close)
            self._history = history = stack.enter_context(
                self._history_sink(extras, table)) if config.history else None
            if history is not None:
                table.observers.append(history.observe)
            signals = stack.enter_context(signal_socket())
            worker = stack.enter_context(Worker())
            checkpoints = Checkpointer(worker, table, self.instance.checkpoint_path,
                                       self._checkpoint_info, file_mode(config.umask),
                                       config.checkpoint_s,
                                       history.checkpoint_arrays if history else dict)
            if history is not None:
                # From the start: whatever this run writes into the history, a crash
                # resumes from a checkpoint that knows it (sink.open_bin_arrays).
                checkpoints.save()
            # An eviction deletes kernel counts the table alone then holds: on disk first.
            collector = Collector(source, table, before_evict=checkpoints.save_before_evict)
            dumps = DumpService(self._writer, worker, table, lambda: self._drain(collector),
                                after=checkpoints.save)
            metrics = self._metrics(collector, table, source, dumps) \
                if config.metrics or config.http else None
            top = self._top(collector, table, source, dumps)
            if config.ipfix:
                self._ipfix(stack, collector, table)
            with ExitStack() as attached:
                hooks = attached.enter_context(ExitStack())  # what stop --keep leaves
                if programs is not None and held is not None:
                    self._attach(hooks, held, programs)
                    if config.promiscuous:  # libpcap does this itself in pcap mode
                        attached.enter_context(promiscuous(config.iface))
                if config.promiscuous:
                    log.info("%s is promiscuous for this run: the filter's host is a "
                             "neighbour", config.iface)
                listener = attached.enter_context(self._listener()) if config.port else None
                # Listening on the control socket is the sign that we are counting.
                control = attached.enter_context(ControlServer(self.instance))
                if config.http:  # a client of the control socket: after it listens
                    attached.enter_context(self._report_server(metrics))
                if config.metrics and metrics is not None:
                    address, port = http_endpoint(config.metrics)
                    attached.enter_context(ReportServer(
                        address, port, None, 0, self._http_allowed(address),
                        scrape=metrics.exposition))
                if self._on_ready:
                    self._on_ready()
                # `systemctl status` shows it: a run whose restart would lose counts says so.
                unpinned = ", maps not pinned: see the log" \
                    if programs is not None and not self._pinned else ""
                notify("READY=1", f"STATUS=counting on {config.iface} ({mode}){unpinned}")
                self._capture = source if isinstance(source, PcapSource) else None
                checkpoints.next_due = time.monotonic() + config.checkpoint_s
                vanished = self._loop(control, signals, listener, collector, source, table,
                                      dumps, checkpoints, top)
                notify("STOPPING=1", "STATUS=writing the final dump")
                # A write in flight ends first, and its waiters (UDP ones too) hear of it.
                checkpoints.closed = True  # the final checkpoint follows
                dumps.settle(extend_stop_timeout)
                if vanished:
                    self._keep = False
                elif self._keep and self._pinned:
                    hooks.pop_all()  # attached they stay, counting into the pinned maps
                    self._programs_kept = True
                elif self._keep and programs is not None:
                    log.warning("the counting maps are not pinned, so no later run could read "
                                "them: detaching; the next start goes on from the checkpoint")
            # Detached (or kept): what the table holds now is complete (or checkpointed).
            return self._final_dump(collector, table, vanished, dumps, checkpoints)

    def _final_dump(self, collector: Collector, table: PeerTable, vanished: bool,
                    dumps: DumpService, checkpoints: Checkpointer) -> Path:
        """Drain, checkpoint, write the final dump (the worker is idle: settle()); the
        requests still waiting for a dump are answered with it."""
        config = self.config
        extend_stop_timeout()  # the drain of a large table takes seconds
        self._drain(collector)
        checkpoints.save_now()  # before the dump, which may take long
        if self._history is not None:
            self._history.spool_open_bin()
            if self._keep:  # the checkpoint carries the open bin
                self._history.forget_stopped_bin()
            else:  # the data set ends with the checkpoint, the bin goes on
                self._history.keep_open_bin()
        if self._programs_kept:
            log.info("stopping with the programs left counting on %s into the maps pinned in "
                     "%s; the table is in %s: 'ncebpf start' goes on from there, "
                     "'ncebpf stop' removes them", config.iface, self.instance.pin_dir,
                     self.instance.checkpoint_path)
        elif self._keep:
            log.info("stopping; the table is in %s: 'ncebpf start' goes on from there (what "
                     "arrives meanwhile is not counted)", self.instance.checkpoint_path)
        if self._dataset and not self._programs_kept:
            pins.unpin(self.instance.pin_dir)
        waiting = dumps.take_waiting()
        now = time.time()
        try:
            final = self._writer.write_final(table, now, self._progress(waiting))
        except OutputError as exc:
            for waiter in waiting:
                waiter.failed(str(exc))
            raise NcebpfError(f"the final dump could not be written anywhere, its "
                              f"{len(table.peers)} peers and {table.totals.packets} packets "
                              f"are lost: {exc}") from exc
        written = WrittenDump(final.path.parent, now)
        for waiter in waiting:
            waiter.written(written)
        if final.refused:
            raise NcebpfError(f"the final dump went to {final.path} instead: {final.refused}")
        if not self._keep:
            self.instance.checkpoint_path.unlink(missing_ok=True)  # this data set ended
        if vanished:
            raise NcebpfError(f"{config.iface} disappeared; the final dump is in {final.path}")
        log.info("%s %s; final dump in %s",
                 "kept counting on" if self._programs_kept else "detached from",
                 config.iface, final.path)
        return final.path

    def _resume(self, new_maps: bool, track_created: bool, extras: checkpoint.Extras
                ) -> PeerTable:
        """The table to count on: the checkpoint's when it is of this data set, with the
        pinned maps' values it was taken against (nothing lost), or rebased when those
        are gone (a reboot, pcap: the seconds since it are lost, and the log says so).
        What the checkpoint holds beside the table goes into extras, whatever its data
        set: the outputs' state (the history's open bin) outlives a data set."""
        now = time.time()
        fresh = PeerTable(start=int(now), track_created=track_created)
        path = self.instance.checkpoint_path
        try:
            loaded = checkpoint.load(path, extras)
        except checkpoint.CheckpointError as exc:
            log.warning("%s: starting a new table", exc)
            return fresh
        if loaded is None:
            if not new_maps:
                log.info("took over the maps pinned in %s (data set %s) without a checkpoint: "
                         "everything they counted is counted now", self.instance.pin_dir,
                         self._dataset)
            return fresh
        table, info = loaded
        table.track_created = track_created
        if info.digest != self._digest:
            log.warning("the checkpoint %s is of another data set (filter, payload search, "
                        "--max-peers or layout changed): starting a new table", path)
            return fresh
        age = max(0.0, now - info.written_at)
        if not new_maps and info.dataset == self._dataset:
            log.info("resumed %d peers from the checkpoint of %.0f s ago; the pinned maps "
                     "counted on meanwhile: no count lost", len(table.peers), age)
            self._reread = True
            return table
        checkpoint.rebase(table)
        why = "pcap mode keeps no counters outside the process" if self._mode == "pcap" \
            else "the counting maps are not pinned" if not self._pinned \
            else "the pinned maps were gone (a reboot, or they were removed)"
        log.warning("resumed %d peers from the checkpoint of %.0f s ago, but %s: "
                    "%.0f seconds of counts were lost", len(table.peers), age, why, age)
        return table

    def _history_sink(self, extras: checkpoint.Extras, table: PeerTable) -> HistorySink:
        """The history of this run, going on with the open bin of the checkpoint (a restart,
        a kill) or of a stopped run."""
        config = self.config
        options = HistoryOptions(
            url=config.history, bin_s=config.history_bin_s,
            retention=Retention(fine_s=round(config.keep_5m_days * DAY_S),
                                hours_s=round(config.keep_hourly_days * DAY_S)),
            queue_bins=config.history_queue, spool_dir=self.instance.history_spool,
            source=Source(socket.gethostname(), self.instance.name))
        sink = HistorySink(options, resumed_from(extras), self._reread, file_mode(config.umask),
                           table.names_of)
        sink.on_wait = extend_stop_timeout  # the last bins' writes at a stop: systemd waits
        log.info("history: %d-second bins in %s", config.history_bin_s,
                 sink.database_shown)
        return sink

    def _checkpoint_info(self, at: float) -> checkpoint.CheckpointInfo:
        """What a checkpoint of this run's table taken at epoch seconds `at` says."""
        return checkpoint.CheckpointInfo(at, self._dataset, self._digest, self._mode)

    def _detach_kept(self, iface: str) -> tuple[tuple[str, ...], int | None] | None:
        """Detach the programs an earlier run of this instance left counting on iface (stop
        --keep, or killed), where this run will not count: nothing would replace them. What
        went and the packets their pinned maps counted since the checkpoint (None: unknown);
        None when nothing of ours was there."""
        packets = pins.pinned_packets(self.instance.pin_dir)
        meta = pins.read_meta(self.instance.pin_dir)
        header = checkpoint.read_header(self.instance.checkpoint_path)
        if packets is not None and header is not None and meta is not None and \
                header[0].dataset == meta.name:
            packets -= header[1].packets
        removed = detach_kept(self.instance, iface)
        return (removed, packets) if removed else None

    def _build_options(self, prepared: PreparedFilter | None) -> BuildOptions:
        config = self.config
        payload = None
        if self._match or self._nomatch:
            payload = PayloadOptions(self._match, self._nomatch, config.payload, config.snaplen)
        return BuildOptions(max_peers=config.max_peers,
                            filter=prepared.translation if prepared else None, payload=payload,
                            raw_ip=self._dlt != DLT_EN10MB,
                            xdp_payload=self._features.bpf_xdp_load_bytes)

    def _attach(self, attached: ExitStack, held: InterfaceLock,
                programs: LoadedPrograms) -> None:
        config, hooks = self.config, self._hooks
        assert hooks is not None  # planned by _choose_mode for every kernel mode
        tc_name = programs.tc.name.decode()
        if hooks.ingress == "xdp":
            attached.enter_context(XdpAttachment(held, programs.xdp.fd, hooks.xdp_mode,
                                                 config.force))
            if rx_vlan_offload(config.iface):
                log.warning("%s has rx-vlan-offload on: XDP cannot read a VLAN tag the driver "
                            "keeps in metadata, so such frames count without the tag's 4 bytes "
                            "and `vlan` filters miss them; --mode tc and pcap see the tag",
                            config.iface)
        elif hooks.ingress == "tc":
            attached.enter_context(TcAttachment(held, programs.tc.fd, tc_name, "ingress"))
        if hooks.egress:
            attached.enter_context(TcAttachment(held, programs.tc.fd, tc_name, "egress"))
        removed = detach_unused_hooks(held, xdp=hooks.ingress == "xdp",
                                      tc_ingress=hooks.ingress == "tc", tc_egress=hooks.egress)
        if removed:
            log.warning("removed ncebpf's %s that an earlier run of another mode left counting "
                        "on %s: this run's programs were attached first, so nothing is lost (a "
                        "frame in between may count twice)", ", ".join(removed), config.iface)

    def _start_resolver(self) -> ReverseResolver | None:
        config = self.config
        if not config.resolve:
            return None
        servers = [parse_server(s) for s in config.resolvers] or system_servers()
        if not servers:
            log.warning("no DNS server in /etc/resolv.conf: peer names are off "
                        "(give --resolver ADDR, or --no-resolve to say so)")
            return None
        log.info("peer names from %s, at most %g lookups a second",
                 ", ".join(map(str, servers)), config.dns_rate)
        return ReverseResolver(servers, rate=config.dns_rate)

    def _listener(self) -> DumpListener:
        return DumpListener(self.config.listen, self.config.port,
                            allowed_or_default(self.config.allow))

    def _report_server(self, metrics: Metrics | None) -> ReportServer:
        """The --http server; its fetch asks this daemon for dumps as `ncebpf dump` does;
        it serves /metrics too."""
        config, instance = self.config, self.instance
        address, port = http_endpoint(config.http)
        return ReportServer(address, port,
                            lambda: fetch_from_instance(instance, HTTP_FETCH_TIMEOUT_S),
                            config.http_refresh_s, self._http_allowed(address),
                            scrape=metrics.exposition if metrics else None)

    def _http_allowed(self, address: str) -> tuple[str, ...] | None:
        """Who may read what an HTTP server (--http, --metrics) bound to address serves
        (README "Serving reports"): an explicit --allow, on any address; without one,
        everyone on a loopback address (only this host can reach it), loopback and this
        host's addresses on any other. None: everyone."""
        allow = self.config.allow
        if is_loopback(address) and allow and not any(is_loopback(a) for a in allow):
            log.warning("%s is a loopback address, and --allow lists none: nobody can "
                        "connect to it; add --allow 127.0.0.1 (or ::1)", address)
        return None if is_loopback(address) and not allow else allowed_or_default(allow)

    def _metrics(self, collector: Collector, table: PeerTable,
                 source: KernelCounterSource | PcapSource, dumps: DumpService) -> Metrics:
        """The Prometheus metrics (--metrics, --http's /metrics): a sink of every drain."""
        config = self.config
        metrics = Metrics({"name": self.instance.name, "interface": config.iface,
                           "mode": self._mode, "filter": config.filter},
                          config.metrics_top, config.metrics_by)

        def state() -> tuple[int, int, Counter[tuple[str, str]], Counter[str] | None]:
            resolver = self._resolver
            return (source.capacity, dumps.written, dumps.requests,
                    resolver.results if resolver is not None else None)
        metrics.take(table, *state())
        collector.sinks.append(lambda report: metrics.drained(report, table, *state()))
        return metrics

    def _ipfix(self, stack: ExitStack, collector: Collector, table: PeerTable) -> None:
        """IPFIX export (--ipfix): the table's deltas as records, after every drain."""
        config = self.config
        exporter = stack.enter_context(IpfixExporter(
            http_endpoint(config.ipfix), config.ipfix_domain, lambda: self._local_now))
        table.observers.append(exporter.observe)
        collector.sinks.append(exporter.drained)
        # After a crash the checkpoint is older than what the last run sent.
        exporter.skip_next = self._reread and self._after_crash
        log.info("ipfix: a record per peer and direction that moved, after each drain, to "
                 "%s (observation domain %d, messages up to %d bytes)", config.ipfix,
                 config.ipfix_domain, exporter.max_size)

    def _top(self, collector: Collector, table: PeerTable,
             source: KernelCounterSource | PcapSource, dumps: DumpService) -> TopService:
        """`ncebpf top`'s answers (ncebpf.top.serve): a sink of every drain, asleep until
        someone asks."""
        config = self.config

        def header(at: float) -> Header:
            return Header(cursor="", full=True, time=at, name=self.instance.name,
                          device=config.iface, filter=config.filter, mode=self._mode,
                          start=table.start, peers=table.listed_count,
                          capacity=source.capacity, interval=config.interval_s,
                          totals=totals_document(table.totals), others=asdict(table.others))

        def drain() -> bool:
            if dumps.holding_drains:  # a HUP's dump: the counters wait for its reset
                return False
            self._drain(collector)
            return True
        service = TopService(ChangeFeed(table, time.monotonic), header, drain)
        collector.sinks.append(service.drained)
        return service

    def _loop(self, control: ControlServer, signals: socket.socket,
              listener: DumpListener | None, collector: Collector,
              source: KernelCounterSource | PcapSource, table: PeerTable,
              dumps: DumpService, checkpoints: Checkpointer, top: TopService) -> bool:
        """Run until a stop signal (False) or until the interface disappears (True)."""
        interval = self.config.interval_s
        next_drain = time.monotonic() + interval
        next_purge = time.monotonic() + PURGE_EVERY_S
        resolver, capture, history = self._resolver, self._capture, self._history
        watched = [signals.fileno(), dumps.worker.fileno()]
        if listener:
            watched.append(listener.fileno())
        if capture:
            watched.append(capture.fileno())
        while True:
            now = time.monotonic()
            # While a HUP's dump holds the drains, its end wakes the loop (the worker's fd).
            timeout = interval if dumps.holding_drains else max(0.0, next_drain - now)
            lookups = resolver.fds() if resolver else []
            if resolver and (deadline := resolver.next_deadline()) is not None:
                timeout = min(timeout, max(0.0, deadline - time.time()))
            for deadline in (control.next_deadline(), dumps.next_deadline()):
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - now))
            if history and (bin_end := history.next_drain_at()) is not None:
                timeout = min(timeout, max(0.0, bin_end - time.time()))
            controls = control.fds()
            ready, _, _ = select.select(watched + controls + lookups, [], [], timeout)
            dumps.worker.collect()  # dumps written: answers, HUP's reset; checkpoints saved
            if capture and capture.fileno() in ready:
                capture.service()
            if resolver:
                resolver.service(table)
            if signals.fileno() in ready and self._stop_signalled(signals, dumps):
                return False
            if len(controls) > 1 or control.fileno() in ready:
                for client in control.requests():
                    if isinstance(client, ChangesRequest):
                        top.answer(client)  # `ncebpf top`: no file, an answer of its own
                    else:
                        dumps.ask(ControlWaiter(client, self.instance))
            if listener and listener.fileno() in ready:
                self._answer(listener, dumps)
            now = time.monotonic()
            if now >= next_drain and not dumps.holding_drains:
                report = collector.drain()
                if resolver:
                    for key in table.take_created():
                        resolver.want(key)
                log.debug("drained %d entries (%d changed, %d evicted) in %.3f s",
                          report.entries, report.changed, report.evicted, report.seconds)
                try:
                    source.set_local_addresses(self._local_addresses())
                except InterfaceNotFound:
                    return True
                if self._on_drain:
                    self._on_drain()
                next_drain = max(next_drain + interval, time.monotonic())
            if history and not dumps.holding_drains and \
                    (bin_end := history.next_drain_at()) is not None and time.time() >= bin_end:
                self._drain(collector)  # what the ending bin holds, to its end
                history.tick(time.time())
            if history and history.take_closed():
                checkpoints.save()  # a crash from here on re-reads nothing into a new bin
            dumps.service(now)
            if checkpoints.due(now):
                if not dumps.holding_drains:
                    self._drain(collector)
                checkpoints.save()
            if now >= next_purge:
                purged = table.purge(int(time.time()))
                if purged:
                    log.info("purged %d peers idle for more than a day", purged)
                next_purge = now + PURGE_EVERY_S

    def _stop_signalled(self, signals: socket.socket, dumps: DumpService) -> bool:
        """Act on the signals received: True for a stop (TERM wins over a HUP beside it)."""
        received = set()
        with contextlib.suppress(BlockingIOError):
            received = set(signals.recv(64))
        if received & {*STOP_SIGNALS, KEEP_SIGNAL}:
            self._keep = not received & set(STOP_SIGNALS)  # a TERM wins
            log.info("stopping on signal%s",
                     ", leaving the programs counting" if self._keep else "")
            return True
        if signal.SIGHUP in received:
            log.info("HUP: dump, then start over")
            dumps.ask(reset=True)
        elif signal.SIGUSR1 in received:
            dumps.ask()
        return False

    def _local_addresses(self) -> list[str]:
        """The peer rule's local side: the host's addresses for this interface's traffic
        (netif.choose_local_side), and the filter's host. Logs the choice when it changes."""
        side = local_side(self.config.iface)
        if side.reason != self._local_reason:
            self._local_reason = side.reason
            log.info("local side of the peer rule: %s (%s)", side.reason,
                     ", ".join(side.addresses) or "none yet")
        self._local_now = [*side.addresses, *self._filter_hosts]
        return self._local_now

    def _answer(self, listener: DumpListener, dumps: DumpService) -> None:
        request = listener.receive(time.time())
        if request is None:
            return
        wants_dump, sender = request
        if not wants_dump:
            listener.reply(sender, "??")
            return
        if time.time() - dumps.last_written < DUMP_SHARING_S:
            listener.reply(sender, f"OK {int(dumps.last_written)}")  # a burst shares a dump
            return
        # After the write, not before (upstream answered first): OK means "it is there".
        dumps.ask(UdpWaiter(listener, sender))

    def _drain(self, collector: Collector) -> None:
        """Everything counted so far into the table: the capture's buffer first, if any.
        (Before every dump: the dump's totals say what the history's queue holds.)"""
        if self._capture is not None:
            self._capture.service()
        collector.drain()
        if self._history is not None:
            status = self._history.status()
            self._writer.context = replace(self._writer.context,
                                           history_pending_bins=status.pending_bins,
                                           history_dropped_bins=status.dropped_bins)

    def _progress(self, waiters: list[DumpWaiter]) -> Callable[[int, int], None]:
        """What the final dump does between pieces: keep its waiters informed and
        systemd's stop timer back, at most every PROGRESS_EVERY_S."""
        last = time.monotonic()

        def tick(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last < PROGRESS_EVERY_S:
                return
            last = now
            for waiter in waiters:
                waiter.progress(done, total)
            extend_stop_timeout()
        return tick
