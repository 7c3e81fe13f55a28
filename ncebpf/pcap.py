"""The libpcap source: capture on the interface, count in user space.

For what the kernel path cannot do: no BPF privileges or no XDP/TC, a filter
the translator refuses, a needle or window beyond the kernel search's limits.
This module runs the filter, applies the payload match (ncebpf.payload) and
the peer rule, and keeps cumulative per-peer counts that the collector
drains exactly as it drains the kernel maps. Frames libpcap reports as
dropped are counted in the totals: a capture can lose frames, and the dump
says how many.

The filter runs here, in user space, on every captured frame, not in the
capture socket: so the frames it rejects are counted (filtered_out), and it
sees the bytes the kernel modes and `tcpdump -r` see. It is compiled as the
kernel path compiles it (a dead handle of the interface's link type:
Ethernet, or raw IP where frames start at the IP header) and run by
libpcap's interpreter (pcap_offline_filter). libpcap hands over each frame with the
VLAN tag the kernel had moved into metadata put back in place, so `host X`
does not match a tagged frame and `vlan and host X` does, as in XDP. A
filter that reads socket metadata (`inbound`, `outbound`, `ifindex`) can
only run in the capture socket; the socket does not count what it rejects,
so filtered_out is then unknown, and the totals say why.
"""

from __future__ import annotations

import ctypes as ct
import logging
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from types import TracebackType

from ncebpf.accounting import Totals, peer_key
from ncebpf.collector import PeerBatch, PeerCounts
from ncebpf.errors import NcebpfError
from ncebpf.filter.cbpf import socket_metadata
from ncebpf.filter.pcap import (
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_RAW,
    bpf_program,
    compile_filter,
    compiled,
)
from ncebpf.filter.translate import pull_len
from ncebpf.libpcap import BpfProgram, Handler, PktHdr, Stat, lib
from ncebpf.packet import NOT_IP, Unparsed, addresses, ip_addresses
from ncebpf.payload import accepts

log = logging.getLogger(__name__)

BUFFER_BYTES = 64 << 20
SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_SOCK_FPROG = struct.Struct("@HP")  # struct sock_fprog: the length, then the instructions
_DISCARD = Handler(lambda _user, _header, _data: None)
HEADERS_SNAPLEN = 128  # enough for Ethernet, 8 VLAN tags, 8 MPLS labels and an IPv6 header


class CaptureError(NcebpfError):
    pass


class PcapSource:
    """A CounterSource fed by a live capture; use as a context manager."""

    def __init__(self, iface: str, expression: str, netmask: int, promiscuous: bool,
                 match: bytes, nomatch: bytes, payload: int, snaplen: int,
                 capacity: int, dlt: int = DLT_EN10MB) -> None:
        self.iface = iface
        self.expression = expression
        self.netmask = netmask
        self.promiscuous = promiscuous
        self.match, self.nomatch = match, nomatch
        self.payload, self.snaplen = payload, snaplen
        self._capacity = capacity
        self._dlt = dlt  # DLT_EN10MB, or DLT_RAW: frames start at the IP header
        self._parse = addresses if dlt == DLT_EN10MB else ip_addresses
        self._searching = bool(match or nomatch)
        self._handle: int | None = None
        self._local: set[bytes] = set()
        # key -> [in packets, in bytes, out packets, out bytes]; cumulative, like the kernel's.
        self._peers: dict[bytes, list[int]] = {}
        self._totals = Totals()
        self._callback = Handler(self._frame)
        insns = compile_filter(expression, netmask, dlt) if expression.strip() else ()
        metadata = socket_metadata(insns)
        # The filter run on each frame here, kept alive for its address, which the frame
        # handler passes; none (address 0): every frame passes, or the socket filters.
        self._program: BpfProgram | None = None
        self._program_address = 0
        self._socket_filter = metadata is not None
        self._offline_filter = lib().pcap_offline_filter  # looked up once: it runs per frame
        self._capture_len = max(snaplen, HEADERS_SNAPLEN)
        if metadata is not None:
            self._totals.unknown["filtered_out"] = (
                f"the filter reads {metadata}, so it runs in the capture socket, "
                "which does not count the frames it rejects")
        elif insns:
            self._program = bpf_program(insns)
            self._program_address = ct.addressof(self._program)
            # A load beyond the captured bytes rejects the frame: capture all the filter reads.
            self._capture_len = max(self._capture_len, pull_len(insns))

    def __enter__(self) -> PcapSource:
        pcap = lib()
        errbuf = ct.create_string_buffer(256)
        handle = pcap.pcap_create(self.iface.encode(), errbuf)
        if not handle:
            raise CaptureError(f"cannot capture on {self.iface}: {errbuf.value.decode()}")
        self._handle = handle
        try:
            pcap.pcap_set_snaplen(handle, self._capture_len)
            pcap.pcap_set_promisc(handle, int(self.promiscuous))
            pcap.pcap_set_immediate_mode(handle, 1)
            pcap.pcap_set_buffer_size(handle, BUFFER_BYTES)
            status = pcap.pcap_activate(handle)
            if status < 0:
                raise CaptureError(f"cannot capture on {self.iface}: "
                                   f"{self._error(status)}")
            self._require_link()
            pcap.pcap_setnonblock(handle, 1, errbuf)
            if self._socket_filter:
                self._set_filter()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("capturing on %s with libpcap", self.iface)
        for field, reason in self._totals.unknown.items():
            log.warning("%s is unknown in this run: %s", field, reason)
        return self

    def _error(self, status: int) -> str:
        detail = lib().pcap_geterr(self._handle) or b""
        return detail.decode(errors="replace") or \
            (lib().pcap_statustostr(status) or b"").decode()

    def _require_link(self) -> None:
        """libpcap hands over frames of the link type the filter was compiled for and the
        parser reads: Ethernet, or raw IP (one family or both)."""
        link = lib().pcap_datalink(self._handle)
        if link == self._dlt or (self._dlt == DLT_RAW and link in (DLT_IPV4, DLT_IPV6)):
            return
        name = (lib().pcap_datalink_val_to_name(link) or str(link).encode()).decode()
        raise CaptureError(f"libpcap captures {self.iface} as link type {name}, which the "
                           "pcap mode does not parse: count it with --mode xdp or tc")

    def _set_filter(self) -> None:
        """The filter as the capture socket's, compiled for the live handle (socket metadata).

        Attached with SO_ATTACH_FILTER (socket(7)), not pcap_setfilter: that
        one also runs the new filter in user space on the frames that come next
        (libpcap's guard against frames queued under an old filter), and its
        interpreter rejects every frame on a load of metadata, so the first
        frame counted after the start was lost. What was queued before the filter
        is discarded instead: it came before counting started.
        """
        assert self._handle is not None
        with compiled(self._handle, self.expression, self.netmask) as program, \
                socket.fromfd(self.fileno(), socket.AF_PACKET, socket.SOCK_RAW) as capture:
            fprog = _SOCK_FPROG.pack(program.bf_len,
                                     ct.cast(program.bf_insns, ct.c_void_p).value or 0)
            try:  # the kernel copies the program: it may be freed once attached
                capture.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            except OSError as exc:
                raise CaptureError(f"cannot set the filter on {self.iface}: "
                                   f"{exc.strerror}") from None
        while lib().pcap_dispatch(self._handle, -1, _DISCARD, None) > 0:
            pass

    def fileno(self) -> int:
        return int(lib().pcap_get_selectable_fd(self._handle))

    def service(self) -> int:
        """Count every frame waiting in the capture buffer; return how many."""
        count = int(lib().pcap_dispatch(self._handle, -1, self._callback, None))
        if count < 0:
            raise CaptureError(f"capture on {self.iface} failed: {self._error(count)}")
        return count

    def _frame(self, _user: int | None, header: int, data: int) -> None:
        totals = self._totals
        if self._program_address and not self._offline_filter(self._program_address, header,
                                                              data):
            totals.filtered_out += 1
            return
        stamp = PktHdr.from_address(header)
        caplen, length = stamp.caplen, stamp.len
        frame = ct.string_at(data, caplen)
        if self._searching and not accepts(frame, self.match, self.nomatch, self.payload,
                                           self.snaplen):
            totals.filtered_out += 1
            return
        found = self._parse(frame)
        if isinstance(found, Unparsed):
            if found is NOT_IP:
                totals.unparsed += 1
            else:
                totals.unattributed += 1
            return
        source, destination = found
        # The kernel programs' rule (bpf/ncebpf.c count_peer): out when the source is local.
        out = source in self._local
        peer = destination if out else source
        counts = self._peers.get(peer)
        if counts is None:
            if len(self._peers) >= self._capacity:
                totals.overflow += 1
                return
            counts = self._peers[peer] = [0, 0, 0, 0]
        counts[2 * out] += 1  # in/out packets, then in/out bytes: PeerCounts' order
        counts[2 * out + 1] += length
        totals.packets += 1
        totals.bytes += length
        if out:
            totals.out_packets += 1
            totals.out_bytes += length

    @property
    def capacity(self) -> int:
        return self._capacity

    def read_peers(self) -> PeerBatch:
        return PeerBatch.from_counts([PeerCounts(key, *counts)
                                      for key, counts in self._peers.items()])

    def read_totals(self) -> Totals:
        stats = Stat()
        dropped = 0
        if lib().pcap_stats(self._handle, ct.byref(stats)) == 0:
            dropped = stats.ps_drop + stats.ps_ifdrop
        return replace(self._totals, dropped=dropped)

    def evict(self, keys: Sequence[bytes]) -> Iterator[PeerCounts]:
        for key in keys:
            counts = self._peers.pop(key, None)
            if counts is not None:
                yield PeerCounts(key, *counts)

    def set_local_addresses(self, addresses: Iterable[str]) -> None:
        self._local = {peer_key(a) for a in addresses}

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            lib().pcap_close(self._handle)
            self._handle = None
