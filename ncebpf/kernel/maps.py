"""Read ncebpf's kernel maps: the CounterSource the collector drains.

Layouts come from BCC's generated ctypes types for bpf/ncebpf_kern_user.h;
nothing here restates a C struct. Per-CPU values arrive as one copy per
possible CPU, which numpy sums over the CPU axis straight from the batch
buffer, a chunk at a time: four cumulative counters per peer (in packets,
in bytes, out packets, out bytes). The kernel keeps no time stamps; the
collector knows when counters moved at drain granularity.

Where the kernel lacks BPF_MAP_LOOKUP_BATCH (5.6) or lookup-and-delete on
hash maps (5.14), ncebpf.kernel.features says so and the source reads key
by key, or evicts with a lookup and then a delete: same results, slower or
(for eviction) with a documented race.
"""

from __future__ import annotations

import ctypes as ct
import struct
from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from ncebpf.accounting import KEY_SIZE, Counts, Totals, peer_key
from ncebpf.collector import PeerBatch, PeerCounts
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import LoadedPrograms
from ncebpf.kernel.features import KernelFeatures, probe

BATCH_ENTRIES = 8192
LOCAL_SLOTS = 256  # NCEBPF_LOCAL_SLOTS
# struct peer_counters, in order; a unit test holds the header to it.
COUNTER_FIELDS = ("in_packets", "in_bytes", "out_packets", "out_bytes")


class TotalsSlot(IntEnum):
    """enum totals_slot in bpf/ncebpf_kern_user.h (a unit test keeps the two in step)."""

    MATCHED_IN = 0
    FILTERED_OUT = 1
    UNPARSED = 2
    OVERFLOW = 3
    UNATTRIBUTED = 4
    MATCHED_OUT = 5


def map_memory_bytes(map_fd: int) -> int:
    """Kernel memory a map holds, as the kernel accounts it (fdinfo memlock)."""
    with open(f"/proc/self/fdinfo/{map_fd}") as info:
        for line in info:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


def local_slot_of(key: bytes) -> int:
    """The slot bpf/parsing.h's local_slot_of() gives the address key."""
    w0, w1, w2, w3, w4 = struct.unpack("=5I", key)
    fold: int = w0 ^ w1 ^ w2 ^ w3 ^ w4
    fold ^= fold >> 16
    fold ^= fold >> 8
    return fold & (LOCAL_SLOTS - 1)


def fold_cpus(values: npt.NDArray[np.uint64]) -> Counts:
    """(entries, 4) counters from an (entries, cpus, 4) array of per-CPU copies: the sum."""
    folded: Counts = values.sum(axis=1, dtype=np.uint64)
    return folded


class KernelCounterSource:
    """The collector's CounterSource over the loaded programs' maps.

    features (default: this process's probe) chooses how the peer map is
    read and evicted from; the results are the same either way.
    """

    def __init__(self, programs: LoadedPrograms, features: KernelFeatures | None = None
                 ) -> None:
        features = features or probe()
        self._read_chunks = libbpf.map_lookup_batches if features.batch_ops else \
            libbpf.map_lookup_key_by_key
        self._atomic_evict = features.hash_lookup_and_delete
        self._programs = programs
        self._peers = programs.table("peers")
        self._totals = programs.table("totals")
        self._local = programs.table("local_addrs")
        self._local_slots = programs.table("local_slots")
        self._fd: int = self._peers.map_fd
        self.cpus: int = self._peers.total_cpu
        self._fields = len(self._peers.sLeaf._fields_)
        self._key_size = ct.sizeof(self._peers.Key)
        self._value_size = ct.sizeof(self._peers.Leaf)  # all CPUs' copies
        self._keys = ct.create_string_buffer(self._key_size * BATCH_ENTRIES)
        self._values = ct.create_string_buffer(self._value_size * BATCH_ENTRIES)
        self._one_value = ct.create_string_buffer(self._value_size)
        self._slots_written: dict[int, tuple[int, bytes]] = {}

    @property
    def capacity(self) -> int:
        return int(self._peers.max_entries)

    @property
    def memory_bytes(self) -> int:
        return map_memory_bytes(self._fd)

    def read_peers(self) -> PeerBatch:
        keys, chunks = bytearray(), []
        key_view, value_view = memoryview(self._keys), memoryview(self._values)
        for count in self._read_chunks(self._fd, self._keys, self._values, self._key_size,
                                       self._value_size):
            keys += key_view[:count * self._key_size]
            per_cpu = np.frombuffer(value_view, dtype=np.uint64,
                                    count=count * self.cpus * self._fields)
            chunks.append(fold_cpus(per_cpu.reshape(count, self.cpus, self._fields)))
        counts = np.concatenate(chunks) if chunks else np.zeros((0, self._fields), np.uint64)
        return PeerBatch(bytes(keys), counts)

    def read_totals(self) -> Totals:
        packets, nbytes = {}, {}
        for slot in TotalsSlot:
            cpus = self._totals[ct.c_int(slot)]  # one lookup: every CPU's copy
            packets[slot] = sum(c.packets for c in cpus)
            nbytes[slot] = sum(c.bytes for c in cpus)
        return Totals(packets=packets[TotalsSlot.MATCHED_IN] + packets[TotalsSlot.MATCHED_OUT],
                      bytes=nbytes[TotalsSlot.MATCHED_IN] + nbytes[TotalsSlot.MATCHED_OUT],
                      out_packets=packets[TotalsSlot.MATCHED_OUT],
                      out_bytes=nbytes[TotalsSlot.MATCHED_OUT],
                      filtered_out=packets[TotalsSlot.FILTERED_OUT],
                      unparsed=packets[TotalsSlot.UNPARSED],
                      unattributed=packets[TotalsSlot.UNATTRIBUTED],
                      overflow=packets[TotalsSlot.OVERFLOW])

    def evict(self, keys: Sequence[bytes]) -> Iterator[PeerCounts]:
        value = self._one_value
        for key in keys:
            if self._take(key, value):
                row = np.frombuffer(memoryview(value), dtype=np.uint64).reshape(
                    1, self.cpus, self._fields)
                in_packets, in_bytes, out_packets, out_bytes = fold_cpus(row)[0].tolist()
                yield PeerCounts(key, in_packets, in_bytes, out_packets, out_bytes)

    def _take(self, key: bytes, value: ct.Array[ct.c_char]) -> bool:
        """Read an entry's last counts into value and remove it; False if it was not there."""
        if self._atomic_evict:
            return libbpf.map_lookup_and_delete(self._fd, key, value)
        # Before 5.14 hash maps have no lookup-and-delete. A packet of this peer
        # that lands between the lookup and the delete is lost with the entry;
        # only peers idle for the purge age (or, with the map nearly full, for
        # EvictionPolicy.min_idle_s) are evicted, so such a packet is rare, and
        # the totals still count it.
        if not libbpf.map_lookup(self._fd, key, value):
            return False
        libbpf.map_delete(self._fd, key)
        return True

    def set_local_addresses(self, addresses: Iterable[str]) -> None:
        """Make the kernel treat exactly these addresses as local."""
        wanted = {peer_key(a) for a in addresses}
        present = {bytes(k) for k in self._local.keys()}
        one = bytes([1])
        # Hash first, slots next, removals last: a slot never points the
        # program at the hash before the hash holds the address.
        for key in wanted - present:
            libbpf.map_update(self._local.map_fd, key, one)
        slots: dict[int, list[bytes]] = {}
        for key in wanted:
            slots.setdefault(local_slot_of(key), []).append(key)
        for slot in set(slots) | set(self._slots_written):
            members = slots.get(slot, [])
            state = (len(members), members[0] if len(members) == 1 else bytes(KEY_SIZE))
            if self._slots_written.get(slot, (0, bytes(KEY_SIZE))) == state:
                continue
            leaf = self._local_slots.Leaf()
            ct.memmove(ct.addressof(leaf.addr), state[1], KEY_SIZE)
            leaf.count = state[0]
            self._local_slots[ct.c_int(slot)] = leaf
            self._slots_written[slot] = state
        for key in present - wanted:
            libbpf.map_delete(self._local.map_fd, key)
