"""The columnar peer table and its key index against straightforward reference models.

The reference table is the one-object-per-peer table ncebpf had before issue
13 (upstream's per-peer rate math written plainly, spec §7.2), with in/out
counts; random sequences of drains, evictions, purges and resets must leave
both with the same peers, fields, others and new-peer lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ncebpf.accounting import HOUR_S, PEER_INTERVAL_S, PURGE_AGE_S, Others, PeerTable, peer_key
from ncebpf.peerindex import KEY_SIZE, SEED_INT, KeyIndex, hash_keys, key_array


@dataclass
class Record:
    """PeerRecord as it was: the upstream fields, plus in/out since creation."""

    now: int
    start: int
    counts: list[int]
    B: int = 0
    C: int = 0
    E: int = 0
    R: float = 0.0
    W: float = 0.0
    N: Sequence[str] = ()
    T: int = 0

    def __post_init__(self) -> None:
        self.B, self.C, self.E = self.counts[1] + self.counts[3], \
            self.counts[0] + self.counts[2], self.now

    def add(self, delta: list[int], now: int) -> None:
        packets, nbytes = delta[0] + delta[2], delta[1] + delta[3]
        self.counts = [a + b for a, b in zip(self.counts, delta, strict=True)]
        if now < self.E + PEER_INTERVAL_S or (self.E == self.start and self.C < 5):
            self.B += nbytes
            self.C += packets
            return
        elapsed = now - self.start if self.start == self.E else HOUR_S + (now - self.E)
        self.R = (self.R + self.C) * HOUR_S / elapsed
        self.W = (self.W + self.B) * HOUR_S / elapsed
        self.E, self.B, self.C = now, nbytes, packets


@dataclass
class ReferenceTable:
    start: int
    peers: dict[bytes, Record] = field(default_factory=dict)
    others: Others = field(default_factory=Others)
    created: list[bytes] = field(default_factory=list)

    def count(self, deltas: dict[bytes, list[int]], now: int) -> None:
        for key, delta in deltas.items():
            record = self.peers.get(key)
            if record is None:
                self.peers[key] = Record(now, self.start, list(delta))
                self.created.append(key)
            else:
                record.add(delta, now)

    def retire(self, keys: list[bytes]) -> int:
        gone = [self.peers.pop(key) for key in keys if key in self.peers]
        self.created = [key for key in self.created if key in self.peers]
        self.others.peers += len(gone)
        self.others.packets += sum(r.counts[0] + r.counts[2] for r in gone)
        self.others.bytes += sum(r.counts[1] + r.counts[3] for r in gone)
        return len(gone)

    def purge(self, now: int) -> int:
        return self.retire([k for k, r in self.peers.items() if r.E + PURGE_AGE_S < now])

    def reset(self, now: int) -> None:
        self.peers.clear()
        self.created.clear()
        self.others = Others()
        self.start = now


def key_of(number: int) -> bytes:
    """A valid-looking peer key; small numbers share hash neighbourhoods often enough."""
    family = 4 if number % 3 else 6
    return bytes([family, 0, 0, 0]) + number.to_bytes(16, "big")


def same(table: PeerTable, reference: ReferenceTable) -> None:
    assert set(table.peers) == set(reference.peers)
    for key, record in reference.peers.items():
        row = table.peers[key]
        assert (row.B, row.C, row.E, row.R, row.W, row.S, row.T, list(row.N)) == \
            (record.B, record.C, record.E, record.R, record.W, reference.start, record.T,
             list(record.N)), key
        assert [row.in_packets, row.in_bytes, row.out_packets, row.out_bytes] == record.counts
        assert (row.packets, row.bytes) == (record.counts[0] + record.counts[2],
                                            record.counts[1] + record.counts[3])
    assert table.others == reference.others
    assert len(table.peers) == len(reference.peers)


deltas = st.lists(st.integers(0, 6), min_size=4, max_size=4).filter(any)
operations = st.lists(st.one_of(
    st.tuples(st.just("count"), st.dictionaries(st.integers(0, 60), deltas, max_size=25),
              st.integers(0, 700)),
    st.tuples(st.just("retire"), st.lists(st.integers(0, 60), max_size=10, unique=True),
              st.just(0)),
    st.tuples(st.just("purge"), st.just({}), st.sampled_from([0, 1, PURGE_AGE_S])),
    st.tuples(st.just("reset"), st.just({}), st.integers(0, 3)),
    st.tuples(st.just("names"), st.lists(st.integers(0, 60), max_size=5), st.integers(1, 99)),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(0, 2))
def test_the_columnar_table_is_the_reference_table(steps: list[tuple[str, object, int]],
                                                   start_offset: int) -> None:
    now = 1_000_000
    table, reference = PeerTable(start=now - start_offset), ReferenceTable(now - start_offset)
    for kind, argument, step in steps:
        if kind == "count":
            assert isinstance(argument, dict)
            now += step
            batch = {key_of(n): d for n, d in argument.items()}
            if batch:
                rows = table.rows_of(key_array(b"".join(batch)), now)
                table.count(rows, np.array(list(batch.values()), dtype=np.uint64), now)
            reference.count(batch, now)
        elif kind == "retire":
            assert isinstance(argument, list)
            keys = [key_of(n) for n in argument]
            assert table.listed_among(keys) == [key in reference.peers for key in keys]
            assert table.retire(keys + keys) == reference.retire(keys)  # twice: once counts
        elif kind == "purge":
            now += step
            assert table.purge(now) == reference.purge(now)
        elif kind == "reset":
            now += step
            table.reset(now)
            reference.reset(now)
        else:
            assert isinstance(argument, list)
            for n in argument:
                key = key_of(n)
                if key in reference.peers:
                    names = [f"h{n}.example"] * (step % 3)
                    table.peers[key].N = reference.peers[key].N = names
                    table.peers[key].T = reference.peers[key].T = now + step
        same(table, reference)
        if step % 2:
            assert table.take_created() == reference.created
            reference.created.clear()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=300, max_size=500, unique=True),
       st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 3000), max_size=60,
                                                  unique=True)), max_size=20))
def test_the_key_index_is_a_dict(first: list[int], steps: list[tuple[bool, list[int]]]) -> None:
    """Rows stay put, new keys get free rows, freed rows are forgotten: like a dict, through
    bulk placement, probing past tombstones, and rebuilds."""
    index, model = KeyIndex(), {}
    for add, numbers in [(True, first), *steps]:
        keys = [key_of(n) for n in numbers]
        array = key_array(b"".join(keys)) if keys else np.zeros(0, dtype=f"V{KEY_SIZE}")
        if add:
            rows, new = index.rows(array, add=True)
            for key, row, fresh in zip(keys, rows.tolist(), new.tolist(), strict=True):
                assert fresh == (key not in model)
                assert row == model.setdefault(key, row)
            assert len(set(model.values())) == len(model) == len(index)
        else:
            rows, _ = index.rows(array, add=False)
            assert rows.tolist() == [model.get(key, -1) for key in keys]
            assert [index.row(key) for key in keys] == rows.tolist()
            index.free(rows[rows >= 0])
            for key in keys:
                model.pop(key, None)
        assert len(index) == len(model)
        assert sorted(index.keys[index.live_rows()].tolist()) == sorted(model)
        assert all(index.keys[row].tobytes() == key for key, row in model.items())


def test_the_slots_depend_on_a_per_process_secret() -> None:
    # Spoofed sources could otherwise be chosen to pile into one probe sequence.
    keys = key_array(b"".join(peer_key(f"10.77.{i >> 8}.{i & 255}") for i in range(64)))
    assert (hash_keys(keys, seed=1) != hash_keys(keys, seed=3)).all()
    assert (hash_keys(keys) == hash_keys(keys, seed=SEED_INT)).all()
