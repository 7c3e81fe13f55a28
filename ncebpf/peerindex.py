"""Peer keys to table rows, a whole batch at a time: a numpy open-addressing hash. Pure.

The peer table keeps its peers in numpy columns (ncebpf.accounting), one
row per key. A drain must find the rows of a million keys at once, and a
Python dict of a million bytes objects costs about 100 B per peer and a
second per drain. This index is an int32 array of slots, at most half full,
probed linearly from a multiplicative hash of the key's five 32-bit keys
(Knuth's multiplicative hashing, TAOCP 6.4, with the 64-bit golden-ratio
constant); every probe round handles all still unresolved keys of the
batch with a few numpy operations, so a batch costs a handful of passes
over its keys whatever its size.

Keys are the 20-byte struct peer_key (bpf/ncebpf_kern_user.h), given as a
one-dimensional array of V20 (key_array turns bytes into one): numpy
gathers and compares such an array four times faster than (n, 5) keys,
and argsort puts it in byte order, which is key order. The index keeps
the keys of its rows itself; rows are dense integers it hands out, reusing
freed ones, so columns indexed by row never need more entries than the
index has ever held at once.
"""

from __future__ import annotations

import secrets
import struct

import numpy as np
import numpy.typing as npt

KEY_SIZE = 20  # sizeof(struct peer_key)
KEY_WORDS = KEY_SIZE // 4
EMPTY = -1  # a slot never used since the last rebuild
TOMBSTONE = -2  # a slot whose row was freed: probing goes on past it
MIN_SLOTS = 1 << 10
GOLDEN_INT = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, odd
GOLDEN = np.uint64(GOLDEN_INT)
MASK_64 = (1 << 64) - 1

KEY_DTYPE = np.dtype(f"V{KEY_SIZE}")
Keys = npt.NDArray[np.void]  # (n,) V20
Rows = npt.NDArray[np.int64]


def key_array(keys: bytes | bytearray | memoryview) -> Keys:
    """n concatenated 20-byte keys as an (n,) V20 array (a view: no copy)."""
    return np.frombuffer(keys, dtype=KEY_DTYPE)


def key_bytes(keys: Keys) -> npt.NDArray[np.uint8]:
    """The keys as an (n, KEY_SIZE) array of their bytes (a view when contiguous): the
    family byte, 3 pad bytes, the 16 address bytes (bpf/ncebpf_kern_user.h)."""
    raw: npt.NDArray[np.uint8] = np.ascontiguousarray(keys).view(np.uint8).reshape(-1, KEY_SIZE)
    return raw


# Peers are whatever source addresses arrive, spoofed ones too: with a hash anyone can
# compute, a flood of addresses chosen to share a slot would make every drain probe
# quadratically. A secret start, drawn per process, keeps the slots unpredictable.
SEED_INT = secrets.randbits(64) | 1


def hash_keys(keys: Keys, seed: int = SEED_INT) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each key: multiply-xor over its five 32-bit words from a secret
    seed, then a fold."""
    words = np.ascontiguousarray(keys).view(np.uint32).reshape(-1, KEY_WORDS)
    h = np.full(len(words), seed, dtype=np.uint64)
    for column in range(KEY_WORDS):
        h ^= words[:, column]
        h *= GOLDEN
    h ^= h >> np.uint64(29)
    return h


class KeyIndex:
    """Rows of peer keys. rows(...) finds (and may add) a batch; free(...) drops rows.

    Invariants: slots holds each live row exactly once, in the probe sequence of
    its key; at most half the slots are live rows or tombstones (rebuild restores
    it); keys[row] is the row's key, all zeros for a free row.
    """

    def __init__(self) -> None:
        self._bits = MIN_SLOTS.bit_length() - 1
        self._slots = np.full(MIN_SLOTS, EMPTY, dtype=np.int32)
        self.keys: Keys = np.zeros(0, dtype=KEY_DTYPE)
        self.live = np.zeros(0, dtype=np.bool_)  # row in use
        self._high = 0  # rows handed out so far: 0 .. _high - 1
        self._free: list[Rows] = []  # freed rows, reused first
        self._free_count = 0
        self._tombstones = 0
        self.generation = 0  # bumped whenever a row is freed: rows found before may be stale

    def __len__(self) -> int:
        return self._high - self._free_count

    @property
    def high(self) -> int:
        """One past the highest row ever handed out: columns need this many entries."""
        return self._high

    def live_rows(self) -> Rows:
        return np.flatnonzero(self.live[:self._high])

    def row(self, key: bytes) -> int:
        """The row of one key, or -1: the same probe in plain Python, for callers that ask
        about one key at a time (a few microseconds, where a batch call costs tens)."""
        h = SEED_INT
        for word in struct.unpack("=5I", key):
            h = ((h ^ word) * GOLDEN_INT) & MASK_64
        h ^= h >> 29
        slots, mask = self._slots, len(self._slots) - 1
        slot = h >> (64 - self._bits)
        while True:
            occupant = int(slots[slot])
            if occupant == EMPTY:
                return -1
            if occupant >= 0 and self.keys[occupant].tobytes() == key:
                return occupant
            slot = (slot + 1) & mask

    def rows(self, keys: Keys, add: bool) -> tuple[Rows, npt.NDArray[np.bool_]]:
        """(row of each key, True where the row is new). Keys in one batch must be distinct.

        Without add, a key the index lacks gets row -1 and is not added.
        """
        if len(self):
            found, _ = self._probe(keys, add=False)
        else:  # nothing to find: a first drain goes straight to adding
            found = np.full(len(keys), -1, dtype=np.int64)
        new = np.zeros(len(keys), dtype=np.bool_)
        missing = np.flatnonzero(found < 0)
        if add and len(missing) > len(self) // 4:
            # Many new keys (a first drain, a flood): rows first, then all slots anew in
            # one pass, which beats probing for a place key by key.
            rows = self._take_rows(len(missing))
            self.keys[rows] = keys[missing]
            self.live[rows] = True
            size = len(self._slots)
            while 2 * len(self) > size:
                size *= 2
            self._rebuild(size)
            found[missing], new[missing] = rows, True
        elif add and len(missing):
            # Sized for the keys really missing, not the batch: a steady drain adds nothing.
            self._reserve(len(self) + len(missing))
            found[missing], new[missing] = self._probe(keys[missing], add=True)
        return found, new

    def _probe(self, keys: Keys, add: bool) -> tuple[Rows, npt.NDArray[np.bool_]]:
        count = len(keys)
        found = np.full(count, -1, dtype=np.int64)
        new = np.zeros(count, dtype=np.bool_)
        if count == 0:
            return found, new
        mask = np.uint64(len(self._slots) - 1)
        slot = (hash_keys(keys) >> np.uint64(64 - self._bits)) & mask
        pending = np.arange(count)
        while len(pending):
            at = slot[pending]
            occupant = self._slots[at].astype(np.int64)
            held = occupant >= 0
            same = np.zeros(len(pending), dtype=np.bool_)
            same[held] = self.keys[occupant[held]] == keys[pending[held]]
            found[pending[same]] = occupant[same]
            empty = occupant == EMPTY
            done = same | empty
            if add and empty.any():
                claimed = self._claim(at[empty], keys[pending[empty]])
                found[pending[empty]] = claimed
                new[pending[empty]] = claimed >= 0
                # Losers stay on their slot: next round they meet the winner's key there.
                done[np.flatnonzero(empty)[claimed < 0]] = False
            advance = ~(same | empty)
            slot[pending[advance]] = (slot[pending[advance]] + np.uint64(1)) & mask
            pending = pending[~done]
        return found, new

    def _claim(self, at: npt.NDArray[np.uint64], keys: Keys) -> Rows:
        """Put new keys into empty slots at; one key per slot wins. Their rows, -1 for losers."""
        candidates = np.arange(len(at), dtype=np.int32)
        # Several keys may want one slot: with repeated indices the last write
        # stays, and that write's candidate is the slot's winner.
        self._slots[at] = -3 - candidates
        won = self._slots[at] == -3 - candidates
        rows = np.full(len(at), -1, dtype=np.int64)
        taken = self._take_rows(int(won.sum()))
        rows[won] = taken
        self._slots[at[won]] = taken
        self.keys[taken] = keys[won]
        self.live[taken] = True
        return rows

    def _take_rows(self, count: int) -> Rows:
        parts, wanted = [], count
        while wanted and self._free:
            chunk = self._free.pop()
            parts.append(chunk[:wanted])
            if len(chunk) > wanted:
                self._free.append(chunk[wanted:])
            wanted -= len(parts[-1])
        self._free_count -= count - wanted
        parts.append(np.arange(self._high, self._high + wanted, dtype=np.int64))
        self._high += wanted
        self._grow_rows(self._high)
        return np.concatenate(parts)

    def _grow_rows(self, needed: int) -> None:
        if needed <= len(self.live):
            return
        size = max(needed, 2 * len(self.live), 1024)
        # np.zeros leaves untouched pages unmapped: capacity costs memory only when used.
        keys = np.zeros(size, dtype=KEY_DTYPE)
        keys[:len(self.keys)] = self.keys
        live = np.zeros(size, dtype=np.bool_)
        live[:len(self.live)] = self.live
        self.keys, self.live = keys, live

    def free(self, rows: Rows) -> None:
        """Forget these rows; their slots become tombstones, the rows reusable."""
        rows = np.unique(rows)
        rows = rows[self.live[rows]]
        if not len(rows):
            return
        freed = np.zeros(self._high, dtype=np.bool_)
        freed[rows] = True
        slot_of = np.flatnonzero(freed[np.maximum(self._slots, 0)] & (self._slots >= 0))
        self._slots[slot_of] = TOMBSTONE
        self._tombstones += len(slot_of)
        self.live[rows] = False
        self.keys[rows] = bytes(KEY_SIZE)
        self._free.append(rows.astype(np.int64))
        self._free_count += len(rows)
        self.generation += 1
        if self._tombstones > len(self._slots) // 4:
            self._rebuild(len(self._slots))

    def _reserve(self, rows: int) -> None:
        """Rebuild into a larger slot array if rows would fill more than half of it."""
        if 2 * (rows + self._tombstones) <= len(self._slots):
            return
        size = len(self._slots)
        while 2 * rows > size:
            size *= 2
        self._rebuild(size)

    def _rebuild(self, size: int) -> None:
        """Place every live row anew into size slots, in one pass without probing.

        Linear probing into empty slots, keys taken in order of their home slot
        h, puts the i-th key at p(i) = max(h(i), p(i-1) + 1), that is
        i + max over j <= i of (h(j) - j): a running maximum (numpy's
        maximum.accumulate). The few keys of a cluster that runs past the last
        slot continue at slot 0, into the first empty slots in order.
        """
        live = self.live_rows()
        self._bits = size.bit_length() - 1
        self._tombstones = 0
        home = (hash_keys(self.keys[live]) >> np.uint64(64 - self._bits)).astype(np.int64)
        order = np.argsort(home)  # any order among equal home slots places validly
        steps = np.arange(len(live), dtype=np.int64)
        place = steps + np.maximum.accumulate(home[order] - steps) if len(live) else steps
        slots = np.full(size, EMPTY, dtype=np.int32)
        fits = place < size
        slots[place[fits]] = live[order[fits]]
        wrapped = live[order[~fits]]
        slots[np.flatnonzero(slots == EMPTY)[:len(wrapped)]] = wrapped
        self._slots = slots
