"""The IPFIX encoder and exporter (ncebpf.export.ipfix), without root: message layout, sequence
numbers and sizes (RFC 7011), the records of a drain, and the exporter against a UDP socket on
loopback. Real collectors read what it sends in tests/test_ipfix.py."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ncebpf.accounting import peer_key
from ncebpf.config import ConfigError, read_file, to_toml
from ncebpf.export.ipfix import (
    FLOW_EGRESS,
    FLOW_INGRESS,
    MESSAGE_HEADER,
    RECORD_DTYPES,
    SET_HEADER,
    TEMPLATE_V4,
    TEMPLATE_V6,
    IpfixExporter,
    encode,
    flow_records,
    template_set,
)
from ncebpf.peerindex import key_array
from tests.test_http import _build

LOCAL = {4: bytes([10, 77, 0, 1]), 6: socket.inet_pton(socket.AF_INET6, "fd77::1")}


def keys_of(*addresses: str) -> np.ndarray:
    return key_array(b"".join(peer_key(a) for a in addresses))


def sets_of(message: bytes) -> list[tuple[int, bytes]]:
    """(set id, set body) of each set in a message, after checking its header."""
    version, length, _, _, _ = MESSAGE_HEADER.unpack_from(message)
    assert version == 10 and length == len(message)
    sets, at = [], MESSAGE_HEADER.size
    while at < len(message):
        set_id, set_length = SET_HEADER.unpack_from(message, at)
        sets.append((set_id, message[at + SET_HEADER.size:at + set_length]))
        at += set_length
    assert at == len(message)
    return sets


def test_the_templates_name_iana_s_elements_in_record_order() -> None:
    ((set_id, body),) = sets_of(MESSAGE_HEADER.pack(10, 16 + len(template_set()), 0, 0, 1)
                                + template_set())
    assert set_id == 2
    templates, at = {}, 0
    while at < len(body):
        tid, count = struct.unpack_from(">HH", body, at)
        fields = [struct.unpack_from(">HH", body, at + 4 + 4 * i) for i in range(count)]
        templates[tid] = fields
        at += 4 + 4 * count
    assert templates == {
        TEMPLATE_V4: [(8, 4), (12, 4), (1, 8), (2, 8), (152, 8), (153, 8), (61, 1)],
        TEMPLATE_V6: [(27, 16), (28, 16), (1, 8), (2, 8), (152, 8), (153, 8), (61, 1)]}
    assert [sum(length for _, length in fields) for fields in templates.values()] == \
        [RECORD_DTYPES[TEMPLATE_V4].itemsize, RECORD_DTYPES[TEMPLATE_V6].itemsize]


def test_a_drain_s_records_split_by_direction_and_family() -> None:
    keys = keys_of("10.77.3.1", "fd77::9", "10.77.3.2")
    deltas = np.array([[7, 700, 2, 200], [0, 0, 1, 90], [0, 0, 0, 0]], dtype=np.uint64)
    records = flow_records(keys, deltas, LOCAL, 1_000, 2_000)
    v4 = records[TEMPLATE_V4]
    assert [(bytes(r["source"]), bytes(r["destination"]), int(r["octets"]), int(r["packets"]),
             int(r["direction"])) for r in v4] == [
        (bytes([10, 77, 3, 1]), LOCAL[4], 700, 7, FLOW_INGRESS),
        (LOCAL[4], bytes([10, 77, 3, 1]), 200, 2, FLOW_EGRESS)]
    (v6,) = records[TEMPLATE_V6]
    assert bytes(v6["destination"]) == socket.inet_pton(socket.AF_INET6, "fd77::9")
    assert (int(v6["octets"]), int(v6["direction"])) == (90, FLOW_EGRESS)
    assert {(int(r["start_ms"]), int(r["end_ms"])) for r in v4} == {(1_000, 2_000)}
    assert flow_records(keys_of("fd77::9"), np.zeros((1, 4), np.uint64), LOCAL, 0, 1) == {}


def test_messages_fit_the_size_and_number_the_data_records() -> None:
    n = 100
    keys = keys_of(*(f"10.77.{i // 250}.{i % 250 + 1}" for i in range(n)))
    deltas = np.tile(np.array([1, 60, 0, 0], dtype=np.uint64), (n, 1))
    records = flow_records(keys, deltas, LOCAL, 0, 1)
    encoded = encode(records, 1_700_000_000, 2**32 - 10, 7, 512, templates=True)
    assert all(len(m) <= 512 for m in encoded.messages)
    per_message = (512 - 20) // RECORD_DTYPES[TEMPLATE_V4].itemsize
    assert encoded.records == [0] + [per_message] * (n // per_message) + [n % per_message]
    sequences = [MESSAGE_HEADER.unpack_from(m)[3] for m in encoded.messages]
    # The template message does not advance it; each data message by its records, mod 2^32.
    assert sequences[:3] == [2**32 - 10, 2**32 - 10, (2**32 - 10 + per_message) % 2**32]
    assert encoded.sequence == (2**32 - 10 + n) % 2**32
    assert {MESSAGE_HEADER.unpack_from(m)[2] for m in encoded.messages} == {1_700_000_000}
    assert {MESSAGE_HEADER.unpack_from(m)[4] for m in encoded.messages} == {7}
    data = b"".join(body for m in encoded.messages[1:] for set_id, body in sets_of(m)
                    if set_id == TEMPLATE_V4)
    back = np.frombuffer(data, dtype=RECORD_DTYPES[TEMPLATE_V4])
    assert back["packets"].sum() == n and back["octets"].sum() == 60 * n


def test_a_message_too_small_for_a_record_is_refused() -> None:
    records = flow_records(keys_of("fd77::9"), np.array([[1, 60, 0, 0]], np.uint64), LOCAL,
                           0, 1)
    with pytest.raises(ValueError, match="holds no record"):
        encode(records, 0, 0, 1, 60)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def collector() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def received(sock: socket.socket) -> list[bytes]:
    messages = []
    sock.settimeout(0.2)
    try:
        while True:
            messages.append(sock.recv(65_535))
    except TimeoutError:
        return messages


def test_the_exporter_sends_templates_first_and_again_at_their_interval(
        collector: socket.socket) -> None:
    clock = Clock()
    keys, deltas = keys_of("10.77.3.1"), np.array([[3, 180, 0, 0]], dtype=np.uint64)
    with IpfixExporter(collector.getsockname(), 9, lambda: ["10.77.0.1"], 60, clock) as sink:
        clock.now += 5
        sink.observe(keys, deltas, int(clock.now))  # a drain: its records, then its end
        sink.drained()
        first = received(collector)
        clock.now += 10
        sink.drained()  # nothing moved
        clock.now += 10
        sink.observe(keys, deltas, int(clock.now))
        sink.drained()
        second = received(collector)
        clock.now += 60
        sink.drained()
        third = received(collector)
        assert sink.records_sent == 2 and sink.sequence == 2
    assert [[s for s, _ in sets_of(m)] for m in first] == [[2], [TEMPLATE_V4]]
    assert [[s for s, _ in sets_of(m)] for m in second] == [[TEMPLATE_V4]]
    assert [[s for s, _ in sets_of(m)] for m in third] == [[2]]  # the templates, on time
    (record,) = np.frombuffer(sets_of(second[0])[0][1], dtype=RECORD_DTYPES[TEMPLATE_V4])
    # The flow spans the last drain's interval, not the time since something last moved.
    assert (int(record["start_ms"]), int(record["end_ms"])) == \
        (1_700_000_015_000, 1_700_000_025_000)
    assert MESSAGE_HEADER.unpack_from(second[0])[3] == 1  # one data record before it


def test_after_a_crash_the_first_drain_is_not_sent_again(
        collector: socket.socket, caplog: pytest.LogCaptureFixture) -> None:
    keys, deltas = keys_of("10.77.3.1"), np.array([[3, 180, 1, 60]], dtype=np.uint64)
    with caplog.at_level(logging.WARNING), \
            IpfixExporter(collector.getsockname(), 9, lambda: ["10.77.0.1"]) as sink:
        sink.skip_next = True
        sink.observe(keys, deltas, 0)
        sink.drained()
        sink.observe(keys, deltas, 0)
        sink.drained()
        assert sink.records_sent == 2 and sink.sequence == 2
    assert "the 2 records of the first drain are not sent" in caplog.text


def test_a_collector_the_kernel_will_not_send_to_costs_records_not_the_run(
        caplog: pytest.LogCaptureFixture) -> None:
    """Broadcast without SO_BROADCAST: refused at connect, before anything is sent."""
    keys, deltas = keys_of("10.77.3.1"), np.array([[3, 180, 0, 0]], dtype=np.uint64)
    with caplog.at_level(logging.WARNING), \
            IpfixExporter(("255.255.255.255", 4739), 9, lambda: ["10.77.0.1"]) as sink:
        sink.observe(keys, deltas, 0)
        sink.drained()
        assert (sink.records_sent, sink.records_dropped) == (0, 1)
    assert caplog.text.count("cannot send to the collector at 255.255.255.255:4739") == 1


def test_messages_are_at_most_an_ethernet_datagram_even_on_loopback(
        collector: socket.socket) -> None:
    with IpfixExporter(collector.getsockname(), 9, lambda: []) as sink:
        assert sink.max_size == 1472


def test_a_collector_that_is_not_there_costs_a_log_line_and_the_records(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        address = closed.getsockname()  # closed now: port unreachable
    clock = Clock()
    keys, deltas = keys_of("10.77.3.1"), np.array([[3, 180, 1, 60]], dtype=np.uint64)
    with caplog.at_level(logging.WARNING), \
            IpfixExporter(address, 9, lambda: ["10.77.0.1"], 60, clock) as sink:
        for _ in range(4):
            sink.observe(keys, deltas, int(clock.now))
            sink.drained()
            clock.now += 1
    # A send finds nobody; the ICMP refusal surfaces on a later send, which is dropped.
    assert sink.records_dropped > 0 and sink.records_sent + sink.records_dropped == 8
    assert caplog.text.count("cannot send to the collector") == 1


def test_ipfix_settings_are_checked_and_read_back(tmp_path: Path) -> None:
    config = _build(tmp_path, ipfix="[fd77::5]:4739", ipfix_domain=77)
    assert (config.ipfix, config.ipfix_domain) == ("[fd77::5]:4739", 77)
    assert _build(tmp_path).ipfix == "" and _build(tmp_path).ipfix_domain == 1
    for unspecified in ("0.0.0.0:4739", "[::]:4739"):
        with pytest.raises(ConfigError, match="names no host"):
            _build(tmp_path, ipfix=unspecified)
    with pytest.raises(ConfigError, match="ipfix_domain: 4294967296 is out of range"):
        _build(tmp_path, ipfix_domain=2**32)
    path = tmp_path / "t.toml"
    path.write_text(to_toml(config))
    assert read_file(path)["ipfix"] == "[fd77::5]:4739"
