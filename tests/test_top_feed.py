"""The daemon's side of `ncebpf top`: which peers moved since a cursor (ncebpf.top.feed), the
answer's bytes (ncebpf.top.wire), and the control socket's `changes` request. No root."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from ncebpf.accounting import PeerTable, peer_key, peer_text
from ncebpf.config import Instance
from ncebpf.control import ChangesRequest, ControlServer, DumpClient
from ncebpf.errors import NcebpfError
from ncebpf.top import feed as feed_module
from ncebpf.top.client import request_changes
from ncebpf.top.feed import ChangeFeed
from ncebpf.top.wire import RECORD, Header, WireError, decode, encode, sizes

A, B, C = peer_key("10.77.0.2"), peer_key("10.77.0.3"), peer_key("fd77::9")
HEADER = Header(cursor="", full=True, time=1000.0, name="t", device="veth0")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def addresses(records: np.ndarray) -> list[str]:  # type: ignore[type-arg]
    return [peer_text(k.tobytes()) for k in records["key"]]


def test_a_first_request_gets_every_peer_then_only_those_that_moved() -> None:
    table = PeerTable(start=1000)
    table.add(A, 1, 100, 1000, 1000)
    table.add(B, 2, 200, 1000, 1000)
    table.names[table.index.row(B)] = ["b.example"]
    feed = ChangeFeed(table, Clock())
    header, records, names = feed.answer("", HEADER)
    assert header.full and header.name == "t"
    assert addresses(records) == ["10.77.0.2", "10.77.0.3"]
    assert records["counts"].tolist() == [[1, 100, 0, 0], [2, 200, 0, 0]]
    assert not records["born"].any()  # the caller's baseline
    assert names == {1: ["b.example"]}

    table.add(B, 1, 50, 1001, 1001, out_packets=1, out_bytes=60)
    table.add(C, 3, 300, 1001, 1001)
    feed.update()  # the drain's sink
    header, records, names = feed.answer(header.cursor, HEADER)
    assert not header.full
    assert addresses(records) == ["10.77.0.3", "fd77::9"]
    assert records["counts"].tolist() == [[3, 250, 1, 60], [3, 300, 0, 0]]
    assert records["born"].tolist() == [0, 1]
    assert names == {0: ["b.example"]}

    header, records, _ = feed.answer(header.cursor, HEADER)  # nothing moved since
    assert not header.full and len(records) == 0


def test_a_peer_leaving_or_an_unknown_cursor_gets_the_whole_table() -> None:
    table = PeerTable(start=1000)
    for key in (A, B):
        table.add(key, 1, 100, 1000, 1000)
    clock = Clock()
    feed = ChangeFeed(table, clock)
    header, _, _ = feed.answer("", HEADER)
    table.retire([A])  # evicted: the caller must forget it
    header, records, _ = feed.answer(header.cursor, HEADER)
    assert header.full and addresses(records) == ["10.77.0.3"]
    header, records, _ = feed.answer(header.cursor, HEADER)
    assert not header.full and len(records) == 0
    for stale in ("", "0bad0bad:1", header.cursor.split(":")[0] + ":999999"):
        again, records, _ = feed.answer(stale, HEADER)
        assert again.full and len(records) == 1
    table.reset(1005)  # HUP
    table.add(B, 1, 10, 1005, 1005)
    header, records, _ = feed.answer(header.cursor, HEADER)
    assert header.full and records["counts"].tolist() == [[1, 10, 0, 0]]


def test_the_feed_sleeps_when_nobody_asks_and_wakes_in_a_new_session() -> None:
    table = PeerTable(start=1000)
    table.add(A, 1, 100, 1000, 1000)
    clock = Clock()
    feed = ChangeFeed(table, clock)
    assert not feed.awake
    feed.update()  # asleep: nothing kept
    header, _, _ = feed.answer("", HEADER)
    assert feed.awake
    clock.now = feed_module.IDLE_S + 1
    feed.sleep_if_idle()
    assert not feed.awake
    again, records, _ = feed.answer(header.cursor, HEADER)
    assert again.full and again.cursor.split(":")[0] != header.cursor.split(":")[0]


def test_the_answer_goes_through_its_bytes_whole() -> None:
    records = np.zeros(2, dtype=RECORD)
    records["key"] = np.frombuffer(A + C, dtype=RECORD["key"])
    records["counts"] = [[1, 2, 3, 4], [2**63, 0, 0, 7]]
    records["born"] = [0, 1]
    payload = encode(HEADER, records, {1: ["ß.example"]})
    line, _, rest = payload.partition(b"\n")
    head, count, tail = sizes(line.decode())
    header, back, names = decode(rest[:head], rest[head:head + count * RECORD.itemsize],
                                 rest[head + count * RECORD.itemsize:])
    assert header == HEADER
    assert back.tobytes() == records.tobytes()
    assert names == {1: ["ß.example"]}
    with pytest.raises(WireError, match="no such thing"):
        sizes("error no such thing")
    with pytest.raises(WireError, match="unexpected"):
        sizes("ok /tmp/x.json")


def instance(tmp_path: Path) -> Instance:
    return Instance("t", tmp_path, tmp_path)


def test_the_control_socket_takes_changes_requests_and_refuses_bad_cursors(
        tmp_path: Path) -> None:
    with ControlServer(instance(tmp_path)) as server:
        clients = []
        for line in (b"changes\n", b"changes 0a1b:42 0.900\n", b"changes ../x\n",
                     b"changes - 4.5\n", b"dump json\n"):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(server.path))
            conn.sendall(line)
            clients.append(conn)
        requests = []
        for _ in range(50):
            requests += server.requests()
            if len(requests) == 4:
                break
        assert [type(r) for r in requests] == [ChangesRequest] * 3 + [DumpClient]
        assert [(r.cursor, r.max_age_s) for r in requests if isinstance(r, ChangesRequest)] \
            == [("", None), ("0a1b:42", 0.9), ("", 4.5)]
        clients[2].settimeout(2)
        assert clients[2].recv(100).startswith(b"error unknown request")
        for conn in clients:
            conn.close()
        for request in requests:
            request.conn.close()


def test_a_user_who_may_not_open_the_socket_is_told_what_access_is_needed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ncebpf.top.client as client

    def refused(path: Path, timeout: float) -> None:
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(client, "_connect", refused)
    with pytest.raises(NcebpfError, match="only root and the user the instance runs as"):
        request_changes(instance(tmp_path), "", 1.0)
    monkeypatch.undo()
    with pytest.raises(NcebpfError, match="no ncebpf instance named 't' is running"):
        request_changes(instance(tmp_path), "", 1.0)


def test_the_service_drains_only_for_counts_older_than_asked_and_sends_off_the_loop() -> None:
    from ncebpf.collector import DrainReport
    from ncebpf.top.serve import TopService
    from ncebpf.top.wire import sizes

    table = PeerTable(start=1000)
    table.add(A, 1, 100, 1000, 1000)
    clock = Clock()
    drains: list[float] = []
    service = TopService(ChangeFeed(table, clock), lambda at: HEADER, lambda: drains.append(
        clock.now) is None, clock=clock, wall=lambda: 1000.0 + clock.now)

    def ask(max_age: float | None) -> bytes:
        ours, theirs = socket.socketpair()
        with ours:
            service.answer(ChangesRequest(theirs, "", max_age))
            ours.settimeout(5)
            data = b""
            while chunk := ours.recv(1 << 16):
                data += chunk
        return data

    clock.now = 0.2
    assert ask(None).startswith(b"changes ") and drains == []  # drained 0.2 s ago: fresh
    clock.now = 0.7
    line, _, _ = ask(None).partition(b"\n")
    assert drains == [0.7]  # 0.7 s old: older than the 0.5 s default
    service.drained(DrainReport(1, 1, 0, 0.01))  # the drain's sink
    clock.now = 4.0
    ask(4.5)  # a top refreshing every 5 s takes the daemon's own drains
    assert drains == [0.7]
    ask(0.1)  # never fresher than 0.5 s: several tops share drains
    assert drains == [0.7, 4.0]
    assert sizes(line.decode())[1] == 1



def test_a_caller_who_has_seen_the_last_drain_gets_a_new_one() -> None:
    """A top refreshing every second asks for counts at most 0.9 s old; one whose request
    comes 0.6 s after a slow drain ended would get that drain again: a repeated snapshot."""
    from ncebpf.collector import DrainReport
    from ncebpf.top.serve import TopService

    table = PeerTable(start=1000)
    table.add(A, 1, 100, 1000, 1000)
    clock = Clock()
    drains: list[float] = []

    def drain() -> bool:
        drains.append(clock.now)
        service.drained(DrainReport(1, 1, 0, 0.3))
        return True
    service = TopService(ChangeFeed(table, clock), lambda at: HEADER, drain, clock=clock,
                         wall=lambda: 1000.0 + clock.now)

    def ask(cursor: str, max_age: float) -> str:
        ours, theirs = socket.socketpair()
        with ours:
            service.answer(ChangesRequest(theirs, cursor, max_age))
            ours.settimeout(5)
            data = b""
            while chunk := ours.recv(1 << 16):
                data += chunk
        line, _, rest = data.partition(b"\n")
        head, count, tail = sizes(line.decode())
        body = count * RECORD.itemsize
        return decode(rest[:head], rest[head:head + body], rest[head + body:])[0].cursor

    clock.now = 1.0
    first = ask("", 0.9)
    assert drains == [1.0]
    clock.now = 1.6  # 0.6 s later: fresh enough by age, but this caller has seen it
    second = ask(first, 0.9)
    assert drains == [1.0, 1.6] and second != first
    clock.now = 1.8  # within FRESH_S of that drain: no drain, however current the cursor
    ask(second, 0.9)
    assert drains == [1.0, 1.6]
    clock.now = 2.0
    ask("", 0.9)  # another caller, counts 0.4 s old: no drain
    assert drains == [1.0, 1.6]


def test_the_answer_is_stamped_with_when_the_drain_read_the_maps() -> None:
    from ncebpf.collector import DrainReport
    from ncebpf.top.serve import TopService

    table = PeerTable(start=1000)
    table.add(A, 1, 100, 1000, 1000)
    clock = Clock()
    stamped: list[float] = []

    def header(at: float) -> Header:
        stamped.append(at)
        return HEADER
    service = TopService(ChangeFeed(table, clock), header, lambda: True, clock=clock,
                         wall=lambda: 2000.0)  # the sinks run late: "now" is not the read
    service.drained(DrainReport(1, 1, 0, 0.6, read_at=1999.3))
    ours, theirs = socket.socketpair()
    with ours:
        service.answer(ChangesRequest(theirs, "", None))
        ours.settimeout(5)
        while ours.recv(1 << 16):
            pass
    assert stamped == [1999.3]
