"""The probe on this kernel, and each fallback with its feature masked (NCEBPF_KERNEL_WITHOUT):
the daemon starts, says so in one line, and still counts exactly; never a traceback."""

from __future__ import annotations

import ctypes as ct
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ncebpf.accounting import KEY_SIZE, peer_text
from ncebpf.filter.frames import ip_frame
from ncebpf.kernel import features as kernel_features
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import BuildOptions, LoadedPrograms, PayloadOptions, loaded_programs
from ncebpf.kernel.features import MASK_VARIABLE, combine
from ncebpf.kernel.maps import KernelCounterSource
from ncebpf.payload import fold, parse_needle
from tests.netns import NCEBPF, TIME_SCALE, DaemonProcess, NetnsPair
from tests.test_kernel_counts import assert_peers, egress_mix, expected_counts, ingress_mix
from tests.test_payload_parity import PAYLOAD, SNAPLEN, expected, traffic

pytestmark = pytest.mark.privileged

BPF_MAP_TYPE_ARRAY = 2
XDP_PASS = 2


def release() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int(minor)


def test_a_kernel_from_5_18_has_every_feature(privileged: None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    if release() < (5, 18):
        pytest.skip(f"kernel {os.uname().release} predates bpf_xdp_load_bytes (5.18): "
                    "the probe's answers there are what the fallback tests exercise")
    kernel_features.probe.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="ncebpf.kernel.features"):
            found = kernel_features.probe()
            again = kernel_features.probe()
    finally:
        kernel_features.probe.cache_clear()
    assert found.probed and not found.masked
    assert found.missing() == []
    assert again is found  # once per process
    assert [r.getMessage() for r in caplog.records] == [found.summary()]
    assert found.summary().startswith("kernel features: bpf_jiffies64 yes, ")


def test_explain_checks_no_filter_where_the_programs_cannot_load(privileged: None) -> None:
    from tests.netns import run

    out = run("env", f"{MASK_VARIABLE}=bpf_jiffies64", *NCEBPF, "explain", "udp")
    assert out.stdout.splitlines()[-1] == (
        f"kernel: not checked: {MASK_VARIABLE} masks bpf_jiffies64 (test aid), which ncebpf's "
        "programs need for the verifier limits and helpers of its kernel generation (probed "
        "in their place; the programs no longer call it)")


def test_the_probes_can_say_no(privileged: None) -> None:
    """Answers the kernel gives for something it really lacks, through the same plumbing."""
    assert not libbpf.probe_helper(kernel_features.BPF_PROG_TYPE_XDP, 100_000)
    # Array maps never had lookup-and-delete: the kernel refuses it as unsupported.
    assert not kernel_features._with_probe_map(
        lambda fd, key, value: libbpf.map_lookup_and_delete(fd, key.raw, value),
        map_type=BPF_MAP_TYPE_ARRAY)


@pytest.fixture
def programs(privileged: None) -> Iterator[LoadedPrograms]:
    with loaded_programs(BuildOptions(max_peers=1024)) as loaded:
        yield loaded


def peer_rows(source: KernelCounterSource) -> dict[str, tuple[int, int]]:
    batch = source.read_peers()
    return {peer_text(batch.keys[i * KEY_SIZE:(i + 1) * KEY_SIZE]):
            (int(batch.packets[i]), int(batch.bytes[i])) for i in range(len(batch))}


def test_key_by_key_drain_reads_what_the_batch_drain_reads(programs: LoadedPrograms) -> None:
    frames = [ip_frame(f"10.77.{i // 200}.{i % 200 + 1}", "10.77.250.1", "udp", i % 50)
              for i in range(700)]
    for frame in frames + frames[::3]:
        assert libbpf.prog_test_run(programs.xdp.fd, frame).retval == XDP_PASS
    batched = peer_rows(KernelCounterSource(programs, combine({}, frozenset())))
    slow = KernelCounterSource(programs, combine({}, frozenset({"batch_ops"})))
    assert peer_rows(slow) == batched
    assert len(batched) == 700
    # Chunks smaller than the map: the walk carries on across buffer refills.
    key_size, value_size = slow._key_size, slow._value_size
    keys = ct.create_string_buffer(key_size * 64)
    values = ct.create_string_buffer(value_size * 64)
    chunks = list(libbpf.map_lookup_key_by_key(slow._fd, keys, values, key_size, value_size))
    assert chunks == [64] * 10 + [60]


def test_eviction_without_lookup_and_delete(programs: LoadedPrograms) -> None:
    source = KernelCounterSource(programs, combine({}, frozenset({"hash_lookup_and_delete"})))
    frame = ip_frame("10.77.9.1", "10.77.250.1", "udp", 20)
    for _ in range(3):
        libbpf.prog_test_run(programs.xdp.fd, frame)
    key = source.read_peers().keys[:KEY_SIZE]
    evicted = list(source.evict([key, bytes(KEY_SIZE)]))  # the second is not there
    assert [(peer_text(e.key), e.packets, e.bytes) for e in evicted] == [
        ("10.77.9.1", 3, 3 * len(frame))]
    assert peer_rows(source) == {}


def test_without_bpf_xdp_load_bytes_the_xdp_programs_are_not_loaded(privileged: None) -> None:
    """As on a 5.15 kernel, where loading them would fail: the TC program searches alone."""
    payload = PayloadOptions(fold(b"x-evil"), b"", PAYLOAD, SNAPLEN)
    options = BuildOptions(max_peers=64, payload=payload, xdp_payload=False)
    with loaded_programs(options) as loaded:
        assert loaded.xdp is None and loaded.payload_verdict is None
        assert loaded.tc.fd >= 0


def stop_cleanly(daemon: DaemonProcess) -> None:
    assert daemon.stop() == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr


def warnings_naming(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


@pytest.mark.parametrize("xdp_mode", ["auto", "native"])
def test_slow_drain_and_replace_masked_count_exactly(pair: NetnsPair, workdir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     xdp_mode: str) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "batch_ops,hash_lookup_and_delete,xdp_flags_replace")
    daemon = DaemonProcess(pair, workdir, "--xdp-mode", xdp_mode, "--interval", "0.2")
    try:
        ingress, egress = ingress_mix(pair), egress_mix(pair)
        assert pair.inject_ingress(ingress, workdir) == len(ingress)
        assert pair.inject_egress(egress, workdir) == len(egress)
        dump = daemon.dump()
    finally:
        stop_cleanly(daemon)
    expected_peers, unparsed = expected_counts(ingress + egress, {pair.local_v4, pair.local_v6})
    assert_peers(dump, expected_peers)
    assert dump["totals"]["unparsed"] == unparsed
    # XDP_FLAGS_REPLACE matters, and is said, only where an XDP program is attached.
    for title, times in (("BPF_MAP_LOOKUP_BATCH", 1), ("BPF_MAP_LOOKUP_AND_DELETE_ELEM", 1),
                         ("XDP_FLAGS_REPLACE", int(xdp_mode == "native"))):
        said = warnings_naming(daemon.stderr, f"{MASK_VARIABLE} masks {title}")
        assert len(said) == times, daemon.stderr
    # Detached without XDP_FLAGS_REPLACE all the same.
    assert pair.xdp_attached() == ""
    assert pair.tc_egress_filters() == ""


def run_payload(pair: NetnsPair, workdir: Path, *args: str) -> tuple[dict[str, Any], str]:
    daemon = DaemonProcess(pair, workdir, "--payload", str(PAYLOAD), "--snaplen", str(SNAPLEN),
                           "--filter", "udp or tcp", "--match", "x-evil", *args)
    try:
        ingress, egress = traffic(pair.local_v4)
        pair.inject_ingress(ingress, workdir)
        pair.inject_egress(egress, workdir)
        time.sleep(0.3)  # let the last frames through the receive path
        dump = daemon.dump()
    finally:
        stop_cleanly(daemon)
    want = expected(ingress + egress, pair.local_v4, fold(parse_needle("x-evil")), b"")
    assert {peer: f["packets"] for peer, f in dump["peers"].items()} == want
    return dump, daemon.stderr


def test_payload_at_tc_without_bpf_xdp_load_bytes(silent_pair: NetnsPair, workdir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "bpf_xdp_load_bytes")
    dump, stderr = run_payload(silent_pair, workdir, "--xdp-mode", "native")
    assert dump["mode"] == "tc"
    said = warnings_naming(stderr, "bpf_xdp_load_bytes")
    assert len(said) == 1 and f"{MASK_VARIABLE} masks bpf_xdp_load_bytes" in said[0], stderr
    assert "--xdp-mode native ignored" in said[0]


def test_a_missing_feature_that_changes_nothing_is_not_said(silent_pair: NetnsPair,
                                                            workdir: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    # TC carries the payload search anyway, and no XDP program is attached.
    monkeypatch.setenv(MASK_VARIABLE, "bpf_xdp_load_bytes,xdp_flags_replace")
    dump, stderr = run_payload(silent_pair, workdir, "--mode", "tc")
    assert dump["mode"] == "tc"
    assert warnings_naming(stderr, MASK_VARIABLE) == [], stderr


def test_an_unknown_mask_is_refused_in_pcap_mode_too(silent_pair: NetnsPair, workdir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "batch_opz")
    out = silent_pair.ns(silent_pair.local, *NCEBPF, "attach", "--iface", silent_pair.local_if,
                         "--mode", "pcap", "--no-resolve", "--statedir", str(workdir),
                         "--piddir", str(workdir), check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"Error: {MASK_VARIABLE} names unknown kernel features batch_opz")


def test_xdp_mode_with_a_payload_refuses_without_bpf_xdp_load_bytes(
        silent_pair: NetnsPair, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "bpf_xdp_load_bytes")
    out = silent_pair.ns(silent_pair.local, *NCEBPF, "attach", "--iface", silent_pair.local_if,
                         "--mode", "xdp", "--match", "x", "--payload", "42", "--snaplen", "120",
                         "--no-resolve", "--statedir",
                         str(workdir), "--piddir", str(workdir), check=False)
    assert out.returncode == 2
    error = [line for line in out.stderr.splitlines() if line.startswith("Error: ")]
    assert error == ["Error: --match/--nomatch at XDP needs bpf_xdp_load_bytes and "
                     f"{MASK_VARIABLE} masks bpf_xdp_load_bytes (test aid): use --mode auto or "
                     "tc, which search payload at TC ingress"], out.stderr
    assert "Traceback" not in out.stderr
    assert silent_pair.xdp_attached() == ""


def test_libpcap_without_bpf_jiffies64(silent_pair: NetnsPair, workdir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "bpf_jiffies64")
    dump, stderr = run_payload(silent_pair, workdir)
    assert dump["mode"] == "pcap"
    said = warnings_naming(stderr, "libpcap in user space")
    assert len(said) == 1 and f"{MASK_VARIABLE} masks bpf_jiffies64 (test aid)" in said[0]


def test_kernel_modes_refuse_without_bpf_jiffies64(silent_pair: NetnsPair, workdir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MASK_VARIABLE, "bpf_jiffies64")
    out = silent_pair.ns(silent_pair.local, *NCEBPF, "attach", "--iface", silent_pair.local_if,
                         "--mode", "tc", "--no-resolve", "--statedir", str(workdir),
                         "--piddir", str(workdir), check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: {MASK_VARIABLE} masks bpf_jiffies64 (test aid), which ncebpf's programs need "
        "for the verifier limits and helpers of its kernel generation (probed in their place; "
        "the programs no longer call it): count with --mode pcap (or auto)")
    assert "Traceback" not in out.stderr


def test_explain_kernel_prints_the_probe(privileged: None) -> None:
    from tests.netns import run

    env_line = run("env", f"{MASK_VARIABLE}=batch_ops", *NCEBPF, "explain", "--kernel")
    rows = env_line.stdout.splitlines()
    assert rows[0].startswith(f"kernel {os.uname().release}: features probed")
    batch = next(line for line in rows if line.startswith("  BPF_MAP_LOOKUP_BATCH "))
    assert batch.split()[1:3] == ["5.6", "masked"]
    assert any("without it: each drain reads the peer map key by key" in line for line in rows)


def test_auto_counts_with_libpcap_where_the_kernel_refuses_bpf(workdir: Path,
                                                                privileged: None) -> None:
    """Root in a user namespace has CAP_BPF there, but the kernel wants the host's: the
    probe's EPERM sends auto mode to libpcap in one line, not to a failed compile."""
    command = (f"ip link set lo up && exec {' '.join(NCEBPF)} attach --iface lo --no-resolve "
               f"--name u --statedir {workdir} --piddir {workdir}")
    daemon = subprocess.Popen(["unshare", "-Urn", "sh", "-c", command],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60 * TIME_SCALE
        while not (workdir / "u.sock").exists():
            assert daemon.poll() is None, daemon.communicate()[1]
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
    finally:
        daemon.terminate()
        _, stderr = daemon.communicate(timeout=30 * TIME_SCALE)
    assert daemon.returncode == 0, stderr
    said = warnings_naming(stderr, "libpcap in user space")
    assert len(said) == 1 and "the kernel refuses BPF to this process" in said[0], stderr
    assert "Traceback" not in stderr and "compile" not in stderr
