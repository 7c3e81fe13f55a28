"""The peer rule inside the kernel, through BPF_PROG_TEST_RUN (no traffic needed)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ncebpf.accounting import KEY_SIZE, peer_key, peer_text
from ncebpf.filter.frames import ip_frame
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import BuildOptions, LoadedPrograms, loaded_programs
from ncebpf.kernel.maps import KernelCounterSource, local_slot_of

pytestmark = pytest.mark.privileged

XDP_PASS = 2
TC_ACT_UNSPEC = 0xFFFFFFFF


@pytest.fixture
def programs(privileged: None) -> Iterator[LoadedPrograms]:
    with loaded_programs(BuildOptions(max_peers=1024)) as loaded:
        yield loaded


def colliding_pair() -> tuple[str, str]:
    """Two IPv4 addresses in 10.77.0.0/16 that share a local slot."""
    by_slot: dict[int, str] = {}
    for a, b in itertools.product(range(256), repeat=2):
        address = f"10.77.{a}.{b}"
        slot = local_slot_of(peer_key(address))
        if slot in by_slot:
            return by_slot[slot], address
        by_slot[slot] = address
    raise AssertionError("no collision found")


def peers_of(source: KernelCounterSource) -> dict[str, int]:
    batch = source.read_peers()
    return {peer_text(batch.keys[i * KEY_SIZE:(i + 1) * KEY_SIZE]): int(batch.packets[i])
            for i in range(len(batch))}


def test_local_source_makes_the_destination_the_peer(programs: LoadedPrograms) -> None:
    shared_a, shared_b = colliding_pair()
    source = KernelCounterSource(programs)
    source.set_local_addresses([shared_a, shared_b, "fd77::1"])
    cases = [
        (shared_a, "10.77.200.1"),  # local source in a shared slot: hash fallback
        (shared_b, "10.77.200.2"),
        ("fd77::1", "fd77::99"),    # local source alone in its slot: inline compare
        ("10.77.200.3", shared_a),  # remote source: the source is the peer
        ("fd77::5", "fd77::1"),
    ]
    for src, dst in cases:
        frame = ip_frame(src, dst, "udp", 10)
        assert libbpf.prog_test_run(programs.xdp.fd, frame).retval == XDP_PASS
        assert libbpf.prog_test_run(programs.tc.fd, frame).retval == TC_ACT_UNSPEC
    assert peers_of(source) == {"10.77.200.1": 2, "10.77.200.2": 2, "fd77::99": 2,
                                "10.77.200.3": 2, "fd77::5": 2}


def test_removed_local_address_is_a_peer_again(programs: LoadedPrograms) -> None:
    source = KernelCounterSource(programs)
    source.set_local_addresses(["10.77.0.1"])
    libbpf.prog_test_run(programs.xdp.fd, ip_frame("10.77.0.1", "10.77.9.9", "tcp"))
    source.set_local_addresses([])
    libbpf.prog_test_run(programs.xdp.fd, ip_frame("10.77.0.1", "10.77.9.9", "tcp"))
    assert peers_of(source) == {"10.77.9.9": 1, "10.77.0.1": 1}
