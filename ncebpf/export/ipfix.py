"""IPFIX export (RFC 7011) of what each drain counted: a sink of the drain (design §1, stage 2).

`--ipfix HOST:PORT` sends, after every drain, one data record per peer and direction whose
counters moved: in (the peer sent it) as peer -> local address, flowDirection ingress; out as
local address -> peer, egress. The local address is the interface's first address of the
peer's family (ncebpf counts per peer, not per pair: `--ipfix` says which local address stands
for the host), the delta of octets and packets since the last drain, and that interval as
flowStartMilliseconds and flowEndMilliseconds (the kernel keeps no time stamps: counts belong
to the drain that read them). Information elements are IANA's (RFC 7012, the IPFIX
Information Elements registry): no enterprise element, so every collector decodes them.

Over UDP (RFC 7011 section 10.3): each message fits the path MTU the kernel knows for the
collector (IP_MTU of the connected socket, less the IP and UDP headers); templates go at the
start and again every `template_interval_s` (section 8.4); the sequence number counts the
data records sent in the observation domain (section 3.1). A collector that is down costs one
log line a minute and nothing else: sends never block the loop, and records that cannot be
sent are dropped (UDP would lose them anyway) and counted.

Encoding is pure (`encode`) and vectorised: the records of a drain are one numpy structured
array per template, cut into messages; a million peers take a few numpy passes.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ncebpf.config import endpoint_text
from ncebpf.peerindex import Keys, key_bytes

log = logging.getLogger(__name__)

IPFIX_VERSION = 10
MESSAGE_HEADER = struct.Struct(">HHIII")  # version, length, export time, sequence, domain
SET_HEADER = struct.Struct(">HH")  # set id, length
TEMPLATE_SET_ID = 2
TEMPLATE_V4, TEMPLATE_V6 = 256, 257
DEFAULT_TEMPLATE_INTERVAL_S = 60.0
FLOW_INGRESS, FLOW_EGRESS = 0, 1  # flowDirection (IE 61)
LOG_EVERY_S = 60.0
SEND_BUFFER = 4 << 20  # bytes asked for (the kernel caps it at net.core.wmem_max)
MAX_MESSAGE = 1472  # an Ethernet MTU's datagram: collectors' buffers take it

# (IANA element id, length in bytes, numpy field): IPFIX Information Elements registry.
_COMMON = ((1, 8, ("octets", ">u8")),           # octetDeltaCount
           (2, 8, ("packets", ">u8")),          # packetDeltaCount
           (152, 8, ("start_ms", ">u8")),       # flowStartMilliseconds
           (153, 8, ("end_ms", ">u8")),         # flowEndMilliseconds
           (61, 1, ("direction", "u1")))        # flowDirection
_V4 = ((8, 4, ("source", "u1", (4,))), (12, 4, ("destination", "u1", (4,))), *_COMMON)
_V6 = ((27, 16, ("source", "u1", (16,))), (28, 16, ("destination", "u1", (16,))), *_COMMON)
TEMPLATES = {TEMPLATE_V4: _V4, TEMPLATE_V6: _V6}
RECORD_DTYPES = {tid: np.dtype([field for _, _, field in fields])
                 for tid, fields in TEMPLATES.items()}


def template_set() -> bytes:
    """The template set of both templates (RFC 7011 section 3.4.1)."""
    records = b"".join(
        struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", ie, length)
                                                       for ie, length, _ in fields)
        for tid, fields in TEMPLATES.items())
    return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(records)) + records


@dataclass(frozen=True)
class Encoded:
    messages: list[bytes]
    records: list[int]  # data records in each message
    sequence: int  # the next message's sequence number


def encode(records: dict[int, npt.NDArray[np.void]], export_time: int, sequence: int,
           domain: int, max_size: int, templates: bool = False) -> Encoded:
    """IPFIX messages of at most max_size bytes carrying records (template id -> structured
    array of RECORD_DTYPES[template id]), the template set first when templates is True.
    sequence is the count of data records sent before, modulo 2^32. Pure."""
    messages: list[bytes] = []
    counts: list[int] = []
    header_size = MESSAGE_HEADER.size + SET_HEADER.size
    if templates:
        body = template_set()
        messages.append(MESSAGE_HEADER.pack(IPFIX_VERSION, MESSAGE_HEADER.size + len(body),
                                            export_time, sequence, domain) + body)
        counts.append(0)
    for tid, array in records.items():
        size = RECORD_DTYPES[tid].itemsize
        per_message = (max_size - header_size) // size
        if per_message < 1:
            raise ValueError(f"a message of {max_size} bytes holds no record of {size}")
        # In the template's byte order whatever the caller's array (numpy's concatenate,
        # for one, makes structured fields native-endian).
        data = np.asarray(array).astype(RECORD_DTYPES[tid], copy=False).tobytes()
        for first in range(0, len(array), per_message):
            count = min(per_message, len(array) - first)
            body = SET_HEADER.pack(tid, SET_HEADER.size + count * size) + \
                data[first * size:(first + count) * size]
            messages.append(MESSAGE_HEADER.pack(IPFIX_VERSION, MESSAGE_HEADER.size + len(body),
                                                export_time, sequence, domain) + body)
            counts.append(count)
            sequence = (sequence + count) % (1 << 32)
    return Encoded(messages, counts, sequence)


def flow_records(keys: Keys, deltas: npt.NDArray[np.uint64], local: dict[int, bytes],
                 start_ms: int, end_ms: int) -> dict[int, npt.NDArray[np.void]]:
    """Data records of one drain: per peer key (n,) V20 and its (n, 4) deltas (in packets,
    in bytes, out packets, out bytes), a record for each direction that moved, by template.
    local: family (4, 6) -> the local address's bytes standing for this host. Pure."""
    raw = key_bytes(keys)
    records: dict[int, npt.NDArray[np.void]] = {}
    for tid, family, first, width in ((TEMPLATE_V4, 4, 16, 4), (TEMPLATE_V6, 6, 4, 16)):
        ours = raw[:, 0] == family
        peers, moved = raw[ours, first:first + width], deltas[ours]
        ins, outs = np.flatnonzero(moved[:, 0]), np.flatnonzero(moved[:, 2])
        part = np.zeros(len(ins) + len(outs), dtype=RECORD_DTYPES[tid])
        here = np.frombuffer(local.get(family, bytes(width)), dtype=np.uint8)
        for rows, at, column, direction in ((ins, slice(0, len(ins)), 0, FLOW_INGRESS),
                                            (outs, slice(len(ins), None), 2, FLOW_EGRESS)):
            peer_side, local_side = ("source", "destination") if direction == FLOW_INGRESS \
                else ("destination", "source")
            part[peer_side][at] = peers[rows]
            part[local_side][at] = here
            part["packets"][at] = moved[rows, column]
            part["octets"][at] = moved[rows, column + 1]
            part["direction"][at] = direction
        part["start_ms"], part["end_ms"] = start_ms, end_ms
        if len(part):
            records[tid] = part
    return records


def max_message_size(sock: socket.socket) -> int:
    """The largest IPFIX message for the connected socket: what fits the path MTU the kernel
    knows for the collector, less the IP and UDP headers (RFC 7011 section 10.3.3), and never
    more than MAX_MESSAGE (a loopback's 64 KiB datagrams overflow collectors' buffers, and
    some read at most 9000 bytes); 512 bytes when the kernel does not say."""
    v6 = sock.family == socket.AF_INET6
    try:
        mtu = sock.getsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
                              getattr(socket, "IPV6_MTU", 24) if v6 else
                              getattr(socket, "IP_MTU", 14))
    except OSError:
        return 512
    return max(512, min(MAX_MESSAGE, mtu - (40 if v6 else 20) - 8))


class IpfixExporter:
    """The `--ipfix` sink: a PeerTable delta observer (observe: the records of a drain) and
    a drain sink (drained: the drain's end, the templates when due).

    endpoint: (IP address, port) of the collector; domain: observationDomainId;
    local_addresses: the host's addresses now (for the local side of the records). Nothing
    here raises for the network: an unreachable collector, an ICMP error or a full buffer
    drops the records, counts them and says so in the log at most once a minute."""

    def __init__(self, endpoint: tuple[str, int], domain: int,
                 local_addresses: Callable[[], Sequence[str]],
                 template_interval_s: float = DEFAULT_TEMPLATE_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.endpoint, self.domain = endpoint, domain
        self.template_interval_s = template_interval_s
        self._local_addresses = local_addresses
        self._clock = clock
        family = socket.AF_INET6 if ":" in endpoint[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        # A drain of a million peers is tens of megabytes of records sent at once: room
        # for bursts, so that EAGAIN means a collector path that is really too slow.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._connected = False
        self.max_size = 512
        self.sequence = 0
        self.records_sent = self.records_dropped = 0
        self.skip_next = False  # the next drain's records are not sent (resume after a crash)
        self._last_ms = int(clock() * 1000)
        self._templates_due = 0.0  # at once
        self._next_log = 0.0  # when a failed send may be logged again
        self._connect()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> IpfixExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def observe(self, keys: Keys, deltas: npt.NDArray[np.uint64], now: int) -> None:
        """PeerTable's delta observer: the peers whose counters moved in this drain, as
        flows from the end of the last drain to now."""
        end_ms = max(int(self._clock() * 1000), self._last_ms)
        records = flow_records(keys, deltas, self._local(), self._last_ms, end_ms)
        if self.skip_next:
            self.skip_next = False
            withheld = sum(len(r) for r in records.values())
            log.warning("ipfix: resumed after a crash: the %d records of the first drain are "
                        "not sent, as the last run may have sent part of them (what arrived "
                        "between the crash and this start is not at the collector)", withheld)
            records = {}
        self._send(records)

    def drained(self, report: object = None) -> None:
        """Collector sink, after each drain (something moved or not): the next records'
        flows start here; the templates go when due."""
        self._last_ms = max(int(self._clock() * 1000), self._last_ms)
        self.skip_next = False
        self._send({})

    def _local(self) -> dict[int, bytes]:
        local: dict[int, bytes] = {}
        for text in self._local_addresses():
            address = ipaddress.ip_address(text)
            local.setdefault(address.version, address.packed)
        return local

    def _connect(self) -> bool:
        """Connect the socket to the collector (a route is needed, and may come later)."""
        if not self._connected:
            try:
                self._sock.connect(self.endpoint)
            except OSError as exc:
                self._failed(0, exc)
                return False
            self._connected = True
            self.max_size = max_message_size(self._sock)
        return True

    def _send(self, records: dict[int, npt.NDArray[np.void]]) -> None:
        now = self._clock()
        templates = now >= self._templates_due
        if not records and not templates:
            return
        total = sum(len(r) for r in records.values())
        if not self._connect():
            self.records_dropped += total
            return
        if templates:
            # With the templates, every minute: the route's MTU may have changed since (a
            # link's MTU lowered, a path MTU learnt or expired).
            self.max_size = max_message_size(self._sock)
        encoded = encode(records, int(now), self.sequence, self.domain, self.max_size,
                         templates)
        self.sequence = encoded.sequence
        if templates:
            self._templates_due = now + self.template_interval_s
        for message, count in zip(encoded.messages, encoded.records, strict=True):
            try:
                self._sock.send(message)
                self.records_sent += count
            except OSError as exc:
                # An error the network reported for an earlier datagram (ICMP: port or host
                # unreachable, administratively prohibited, fragmentation needed) or a full
                # buffer: this message is lost, as it would be on the wire.
                if exc.errno == errno.EMSGSIZE:  # the path MTU shrank: smaller from now on
                    self.max_size = max_message_size(self._sock)
                if count == 0:
                    self._templates_due = now  # the templates again with the next drain
                self._failed(count, exc)

    def _failed(self, records: int, exc: OSError) -> None:
        self.records_dropped += records
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + LOG_EVERY_S
            lost = f"{self.records_dropped} records dropped so far" if self.records_dropped \
                else "no records dropped yet"
            log.warning("ipfix: cannot send to the collector at %s (%s): %s; counting goes "
                        "on", endpoint_text(*self.endpoint), exc.strerror or exc, lost)
