"""Read ncebpf's kernel maps: the CounterSource the collector drains.

Layouts come from BCC's generated ctypes types for bpf/ncebpf_kern_user.h;
nothing here restates a C struct. Per-CPU values arrive as one copy per
possible CPU, which we sum (packets, bytes), minimise (first seen, ignoring
CPUs that never saw the peer) and maximise (last seen).
"""

from __future__ import annotations

import ctypes as ct
import struct
from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum

from ncebpf.accounting import Totals, peer_key
from ncebpf.collector import PeerCounts
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import LoadedPrograms

BATCH_ENTRIES = 8192


class TotalsSlot(IntEnum):
    """enum totals_slot in bpf/ncebpf_kern_user.h (a unit test keeps the two in step)."""

    MATCHED = 0
    FILTERED_OUT = 1
    UNPARSED = 2
    OVERFLOW = 3


class KernelCounterSource:
    def __init__(self, programs: LoadedPrograms) -> None:
        self._peers = programs.table("peers")
        self._totals = programs.table("totals")
        self._local = programs.table("local_addrs")
        self._fd: int = self._peers.map_fd
        self.cpus: int = self._peers.total_cpu
        self._key_size = ct.sizeof(self._peers.Key)
        self._value_size = ct.sizeof(self._peers.Leaf)  # all CPUs' copies
        per_cpu_fields = len(self._peers.sLeaf._fields_)
        self._stride = per_cpu_fields
        self._unpack = struct.Struct(f"={per_cpu_fields * self.cpus}Q").unpack_from
        self._keys = ct.create_string_buffer(self._key_size * BATCH_ENTRIES)
        self._values = ct.create_string_buffer(self._value_size * BATCH_ENTRIES)
        self._one_value = ct.create_string_buffer(self._value_size)

    @property
    def capacity(self) -> int:
        return int(self._peers.max_entries)

    def read_peers(self) -> Iterator[PeerCounts]:
        for count in libbpf.map_lookup_batches(self._fd, self._keys, self._values,
                                               self._key_size, self._value_size):
            keys = self._keys.raw
            values = self._values.raw
            ksize, vsize = self._key_size, self._value_size
            for i in range(count):
                yield self._decode(keys[i * ksize:(i + 1) * ksize], values, i * vsize)

    def _decode(self, key: bytes, values: bytes, offset: int) -> PeerCounts:
        row = self._unpack(values, offset)
        stride = self._stride
        if self.cpus == 2:  # the common small machine: no slicing
            p0, b0, f0, l0, p1, b1, f1, l1 = row[:8]
            first = min(f0, f1) if f0 and f1 else f0 or f1
            return PeerCounts(key, p0 + p1, b0 + b1, first, max(l0, l1))
        firsts = [f for f in row[2::stride] if f]
        return PeerCounts(key, sum(row[0::stride]), sum(row[1::stride]),
                          min(firsts) if firsts else 0, max(row[3::stride]))

    def read_totals(self) -> Totals:
        slots = [(sum(c.packets for c in self._totals[ct.c_int(slot)]),
                  sum(c.bytes for c in self._totals[ct.c_int(slot)])) for slot in TotalsSlot]
        matched = slots[TotalsSlot.MATCHED]
        return Totals(packets=matched[0], bytes=matched[1],
                      filtered_out=slots[TotalsSlot.FILTERED_OUT][0],
                      unparsed=slots[TotalsSlot.UNPARSED][0],
                      overflow=slots[TotalsSlot.OVERFLOW][0])

    def evict(self, keys: Sequence[bytes]) -> Iterable[PeerCounts]:
        value = self._one_value
        for key in keys:
            if libbpf.map_lookup_and_delete(self._fd, key, value):
                yield self._decode(key, value.raw, 0)

    def set_local_addresses(self, addresses: Iterable[str]) -> None:
        """Make the local-address map hold exactly these addresses."""
        wanted = {peer_key(a) for a in addresses}
        present = {bytes(k.addr) for k in self._local.keys()}
        one = bytes([1])
        for key in wanted - present:
            libbpf.map_update(self._local.map_fd, key, one)
        for key in present - wanted:
            libbpf.map_delete(self._local.map_fd, key)
