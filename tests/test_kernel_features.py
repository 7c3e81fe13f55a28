"""The kernel feature probe's plumbing, without root: names, masks, lines, the explain table."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

from ncebpf.cli import main
from ncebpf.errors import UsageError
from ncebpf.kernel.attach import plan_hooks
from ncebpf.kernel.features import (
    FEATURES,
    HELPER_IDS,
    MASK_VARIABLE,
    PROBES,
    KernelFeatures,
    combine,
    masked_names,
    render,
)
from ncebpf.kernel.netif import Link

UAPI_BPF_H = Path("/usr/include/linux/bpf.h")


def feature_fields() -> set[str]:
    return {f.name for f in fields(KernelFeatures) if f.type == "bool"} - {"probed", "denied"}


def test_every_feature_has_a_field_a_row_and_a_probe() -> None:
    assert {f.name for f in FEATURES} == feature_fields()
    # XDP_FLAGS_REPLACE needs an interface to try: attach finds out instead.
    assert set(PROBES) == feature_fields() - {"xdp_flags_replace"}
    for probe_function in PROBES.values():
        assert probe_function.__doc__ and re.search(r"\d\.\d+", probe_function.__doc__)


def test_helper_ids_are_the_uapi_enum() -> None:
    if not UAPI_BPF_H.exists():
        pytest.skip(f"{UAPI_BPF_H} is missing (linux-libc-dev)")
    text = UAPI_BPF_H.read_text()
    mapper = re.search(r"#define __BPF_FUNC_MAPPER\(FN\)(.*?)\n\n", text, re.S)
    assert mapper is not None
    listed = re.findall(r"FN\((\w+)(?:,\s*(\d+))?", mapper.group(1))
    ids = {name: int(number) if number else index for index, (name, number) in enumerate(listed)}
    assert {name: ids[name] for name in HELPER_IDS} == HELPER_IDS


def test_masks_are_parsed_and_checked() -> None:
    assert masked_names("") == frozenset()
    assert masked_names(" batch_ops, bpf_xdp_load_bytes ,") == {"batch_ops",
                                                                 "bpf_xdp_load_bytes"}
    with pytest.raises(UsageError, match="unknown kernel features batch_op:"):
        masked_names("batch_op")


def test_a_masked_feature_is_off_and_says_it_was_masked() -> None:
    features = combine({"batch_ops": True, "hash_lookup_and_delete": False},
                       frozenset({"batch_ops"}))
    assert not features.batch_ops and not features.hash_lookup_and_delete
    assert features.bpf_xdp_load_bytes and features.xdp_flags_replace
    assert [f.name for f in features.missing()] == ["batch_ops", "hash_lookup_and_delete"]
    assert features.state("batch_ops") == "masked"
    assert features.state("hash_lookup_and_delete") == "no"
    assert features.state("bpf_jiffies64") == "yes"
    assert features.state("xdp_flags_replace") == "at attach"
    assert features.fallback_line("batch_ops") == (
        f"{MASK_VARIABLE} masks BPF_MAP_LOOKUP_BATCH (test aid): each drain reads the peer "
        "map key by key (two syscalls a peer: slower)")
    assert features.fallback_line("hash_lookup_and_delete").startswith(
        "this kernel lacks BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps (5.14): lookup, then "
        "delete")
    assert features.kernel_path_refusal() is None


def test_the_kernel_path_needs_jiffies_and_the_tc_helpers() -> None:
    assert combine({"bpf_jiffies64": False}, frozenset()).kernel_path_refusal() == (
        "this kernel lacks bpf_jiffies64 (5.5), which ncebpf's programs need for the verifier "
        "limits and helpers of its kernel generation (probed in their place; the programs no "
        "longer call it)")
    refusal = combine({}, frozenset({"tc_skb_helpers"})).kernel_path_refusal()
    assert refusal is not None and refusal.startswith(
        f"{MASK_VARIABLE} masks bpf_skb_load_bytes and bpf_skb_pull_data at TC (test aid)")


def test_not_probed_takes_everything_as_present() -> None:
    features = combine({"batch_ops": False}, frozenset(), "not probed: no privileges")
    assert features.batch_ops  # an answer without a probe is ignored
    assert not features.probed
    assert {features.state(f.name) for f in FEATURES} == {"not probed"}
    assert features.summary().endswith("(not probed: no privileges)")


def test_explain_table_names_every_feature_and_each_fallback_taken() -> None:
    features = combine({"bpf_xdp_load_bytes": False}, frozenset({"batch_ops"}))
    text = render(features, "5.15.0-test")
    assert text.splitlines()[0] == "kernel 5.15.0-test: features probed, not read off the version"
    rows: dict[str, str] = {}
    for line in text.splitlines():
        for f in FEATURES:
            if line.startswith(f"  {f.title} "):
                rows.setdefault(f.title, line)
    assert len(rows) == len(FEATURES)
    for feature in FEATURES:
        assert f" {feature.since} " in rows[feature.title]
    assert " no " in rows["bpf_xdp_load_bytes"] and " masked " in rows["BPF_MAP_LOOKUP_BATCH"]
    assert " yes " in rows["bpf_jiffies64"]
    fallbacks = [line.split("without it: ")[1] for line in text.splitlines()
                 if "without it: " in line]
    assert fallbacks == [f.fallback for f in FEATURES
                         if f.name in ("bpf_xdp_load_bytes", "batch_ops")]


VETH = Link(5, "nct0", "veth", False, 0, 0)


LACKS = "this kernel lacks bpf_xdp_load_bytes (5.18)"
MASKS = "NCEBPF_KERNEL_WITHOUT masks bpf_xdp_load_bytes (test aid)"


def test_xdp_without_bpf_xdp_load_bytes_refuses_in_one_line() -> None:
    for lack in (LACKS, MASKS):
        with pytest.raises(UsageError) as refused:
            plan_hooks("xdp", "auto", True, True, VETH, xdp_payload_lack=lack)
        assert lack in str(refused.value)
        assert "\n" not in str(refused.value)
    # Egress only: no XDP, nothing to refuse.
    assert plan_hooks("xdp", "auto", False, True, VETH, xdp_payload_lack=LACKS).ingress == ""


def test_auto_with_xdp_mode_counts_payload_at_tc_without_bpf_xdp_load_bytes() -> None:
    plan = plan_hooks("auto", "native", True, True, VETH, xdp_payload_lack=MASKS)
    assert (plan.mode, plan.ingress) == ("tc", "tc")
    assert plan.notes == (f"{MASKS}: --xdp-mode native ignored on nct0, ingress is counted "
                          "with TC, where the payload search works",)
    assert plan_hooks("auto", "native", True, True, VETH).ingress == "xdp"
    # Default auto counts ingress with TC anyway: nothing changes, nothing to say.
    assert plan_hooks("auto", "auto", True, True, VETH, xdp_payload_lack=LACKS).notes == (
        plan_hooks("auto", "auto", True, True, VETH).notes)


def test_a_refused_probe_means_no_kernel_path() -> None:
    features = combine({}, frozenset(), "not probed: create a BPF map: Operation not permitted",
                       denied=True)
    refusal = features.kernel_path_refusal()
    assert refusal is not None and "refuses BPF to this process" in refusal
    assert "CAP_BPF" in refusal and "\n" not in refusal
    assert "ncebpf counts with libpcap" in render(features, "6.1.0")
    assert render(features, "6.1.0").splitlines()[0] == (
        "kernel 6.1.0: features not probed: create a BPF map: Operation not permitted; "
        "taken as present")


def test_explain_needs_an_expression_or_kernel() -> None:
    result = CliRunner().invoke(main, ["explain"])
    assert result.exit_code == 2
    assert "explain needs a filter EXPRESSION, or --kernel" in result.output
