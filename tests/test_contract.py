"""The kernel/user contract header and the Python side agree (no root needed)."""

from __future__ import annotations

import re

from ncebpf.accounting import COUNT_FIELDS, KEY_SIZE, peer_key
from ncebpf.kernel.build import bpf_source_dir
from ncebpf.kernel.maps import COUNTER_FIELDS, TotalsSlot

HEADER = bpf_source_dir() / "ncebpf_kern_user.h"


def _block(name: str) -> str:
    match = re.search(rf"{name}\s*{{(.*?)}};", HEADER.read_text(), re.S)
    assert match, name
    return re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)


def test_totals_slots_match_the_enum() -> None:
    names = [n.strip() for n in _block("enum totals_slot").split(",") if n.strip()]
    assert names[-1] == "TOTALS_NR"
    assert [f"TOTALS_{slot.name}" for slot in TotalsSlot] == names[:-1]
    assert [slot.value for slot in TotalsSlot] == list(range(len(names) - 1))


def test_peer_counters_field_order_is_what_the_decoder_assumes() -> None:
    fields = re.findall(r"__u64 (\w+);", _block("struct peer_counters"))
    # KernelCounterSource folds the fields in this order into PeerBatch.counts' columns.
    assert fields == list(COUNTER_FIELDS) == list(COUNT_FIELDS)


def test_peer_key_is_family_then_address_as_accounting_builds_it() -> None:
    fields = re.findall(r"__u8 (\w+(?:\[\d+\])?);", _block("struct peer_key"))
    assert fields == ["family", "pad[3]", "addr[16]"]
    assert KEY_SIZE == 1 + 3 + 16
    text = HEADER.read_text()
    assert "#define NCEBPF_FAMILY_IPV4 4" in text and "#define NCEBPF_FAMILY_IPV6 6" in text
    assert peer_key("10.77.0.1")[:4] == bytes([4, 0, 0, 0])
    assert peer_key("::ffff:10.77.0.1")[:4] == bytes([6, 0, 0, 0])
