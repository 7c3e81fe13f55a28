"""ncebpf benchmarks: print figures next to what they compare with; never fail on time.

    sudo .venv/bin/python bench/run.py [--peers 100000,1000000]

Needs root and BCC. Uses BPF_PROG_TEST_RUN (no traffic, no namespaces).
"""

from __future__ import annotations

import argparse
import ctypes as ct
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from figures import Figure, show_difference, show_ratio

from ncebpf.accounting import PeerTable, peer_key
from ncebpf.collector import Collector
from ncebpf.filter import prepare
from ncebpf.filter.frames import ETH_P_ARP, arp_request, ethernet, ip_frame
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import (
    GENERATED_FILTER_HEADER,
    BuildOptions,
    bpf_source_dir,
    import_bcc,
    loaded_programs,
)
from ncebpf.kernel.features import combine
from ncebpf.kernel.headers import ensure_headers
from ncebpf.kernel.maps import KernelCounterSource
from ncebpf.memory import return_large_blocks

REPEAT = 1_000_000
BENCH_FILTER = "udp port 53 and dst host 10.77.0.1"


ROUNDS = 5  # interleaved: this VM's speed drifts between runs
# README's figures of 2026-11-30, one Python object per peer (before the columnar table):
# first drain, steady drain, daemon memory per peer.
BEFORE_COLUMNS = {100_000: ("0.27 s", "0.07 s", "399 B"),
                  1_000_000: ("2.90 s", "0.87 s", "363 B")}


def row(figure: str, value: str, compare: str) -> None:
    print(f"  {figure:<44} {value:>20}   {compare}")


def timed_ns(prog_fd: int, frame: bytes) -> float:
    """Mean ns per run of one BPF_PROG_TEST_RUN over REPEAT repeats (the kernel's figure)."""
    return float(libbpf.prog_test_run(prog_fd, frame, REPEAT).duration_ns)


def rounds_of(measure: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each measurement ROUNDS times, interleaved, so that paired differences share a round."""
    out: dict[str, list[float]] = {label: [] for label in measure}
    for _ in range(ROUNDS):
        for label, one in measure.items():
            out[label].append(one())
    return out


def bench_per_packet(programs, baseline_fd: int, floor_fd: int) -> None:  # type: ignore[no-untyped-def]
    known = ip_frame("10.77.0.2", "10.77.0.1", "udp", 18)  # 60-byte frame
    arp = ethernet(arp_request(), ETH_P_ARP)
    libbpf.prog_test_run(programs.xdp.fd, known)  # the peer now exists
    libbpf.prog_test_run(floor_fd, known)
    fresh = (ip_frame(f"fd77:{i >> 16:x}:{i & 0xffff:x}::9", "fd77::1", "udp", 18)
             for i in range(1 << 30))

    def singles(frames: Callable[[], bytes]) -> float:
        # One test_run per frame, so the kernel's figure covers one packet.
        return statistics.median(libbpf.prog_test_run(programs.xdp.fd, frames()).duration_ns
                                 for _ in range(4000))

    ns = rounds_of({
        "harness": lambda: timed_ns(baseline_fd, known),
        "floor": lambda: timed_ns(floor_fd, known),
        "xdp": lambda: timed_ns(programs.xdp.fd, known),
        "tc": lambda: timed_ns(programs.tc.fd, known),
        "arp": lambda: timed_ns(programs.xdp.fd, arp),
        "new": lambda: singles(lambda: next(fresh)),
        "single": lambda: singles(lambda: known),
    })
    print(f"per packet, BPF_PROG_TEST_RUN: median (min–max) of {ROUNDS} interleaved rounds of "
          f"{REPEAT:,} repeats; 60-byte UDP/IPv4 frame")
    row("harness: empty XDP program", Figure.of(ns["harness"]).show("ns"),
        "BPF_PROG_TEST_RUN's own cost")
    row("floor: one per-CPU hash update, 16 B key", Figure.of(ns["floor"]).show("ns"),
        "the least any per-peer counter costs here")
    row("XDP, matched packet of a known peer", Figure.of(ns["xdp"]).show("ns"),
        f"{show_ratio(ns['xdp'], ns['floor'])} the floor (target <= 1.1x); "
        + show_difference(ns["xdp"], ns["floor"], "ns", resolution=1))
    row("TC, matched packet of a known peer", Figure.of(ns["tc"]).show("ns"),
        "vs the floor: " + show_difference(ns["tc"], ns["floor"], "ns", resolution=1))
    row("XDP, non-IP frame (ARP)", Figure.of(ns["arp"]).show("ns"), "-> unparsed")
    row("XDP, new peer (insert), single runs", Figure.of(ns["new"]).show("ns"),
        f"vs {Figure.of(ns['single']).show('ns')} for a known peer, single runs "
        "(median of 4000 per round)")


def _fill(source: KernelCounterSource, map_fd: int, count: int, value_size: int) -> None:
    """Write count synthetic peers straight into the map (per-CPU values on every CPU)."""
    # in packets, in bytes, out packets, out bytes (struct peer_counters)
    per_cpu = b"".join(n.to_bytes(8, "little") for n in (1, 100, 2, 300))
    value = per_cpu * source.cpus
    assert len(value) == value_size
    chunk = 65536
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        keys = b"".join(peer_key(f"fd77:{(start + i) >> 16:x}:{(start + i) & 0xffff:x}::1")
                        for i in range(n))
        libbpf.map_update_batch(map_fd, ct.create_string_buffer(keys, len(keys)),
                                ct.create_string_buffer(value * n, len(value) * n), n)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_drain(peer_counts: list[int]) -> None:
    return_large_blocks()  # as the daemon does at start
    print("drain: kernel map -> peer table, Python included; median (min–max) of 3 fresh maps"
          + (" (2 possible CPUs here)" if os.cpu_count() == 2 else ""))
    for count in peer_counts:
        first, steady, rss_per_peer, batch_read, key_read = [], [], [], [], []
        for _ in range(3):
            with loaded_programs(BuildOptions(max_peers=max(count, 1024))) as programs:
                source = KernelCounterSource(programs)
                peers = programs.table("peers")
                _fill(source, peers.map_fd, count, ct.sizeof(peers.Leaf))
                # Preallocated: the map's memory is fixed at creation, so per peer =
                # total / capacity.
                kernel_per_peer = source.memory_bytes / source.capacity
                gc.collect()
                rss_before = rss_bytes()
                table = PeerTable(start=time.time())
                collector = Collector(source, table)
                drained = collector.drain()
                rss_per_peer.append((rss_bytes() - rss_before) / count)
                again = collector.drain()
                assert len(table.peers) == count and drained.changed == count
                assert again.changed == 0
                first.append(drained.seconds)
                steady.append(again.seconds)
                # The map read alone, with and without BPF_MAP_LOOKUP_BATCH (kernels < 5.6).
                key_by_key = KernelCounterSource(programs, combine({}, frozenset({"batch_ops"})))
                for reader, times in ((source, batch_read), (key_by_key, key_read)):
                    started = time.perf_counter()
                    assert len(reader.read_peers()) == count
                    times.append(time.perf_counter() - started)
                del table, collector
                gc.collect()
        label = f"{count:,} peers"
        before = BEFORE_COLUMNS.get(count)
        row(f"first drain, {label}", Figure.of(first).show("s", digits=3),
            ("target <= 0.5 s for 1 M peers; " if count >= 1_000_000 else "")
            + (f"before issue 13: {before[0]}" if before else ""))
        row(f"steady drain (nothing changed), {label}", Figure.of(steady).show("s", digits=3),
            ("target <= 0.2 s for 1 M peers; " if count >= 1_000_000 else "")
            + (f"before issue 13: {before[1]}" if before else ""))
        row(f"map read key by key (no batch ops, < 5.6), {label}",
            Figure.of(key_read).show("s", digits=3),
            f"vs {Figure.of(batch_read).show('s', digits=3)} batched")
        row(f"kernel memory per peer, {label}", f"{kernel_per_peer:.0f} B",
            "target <= 160 B at 2 CPUs (fdinfo memlock)")
        # Later rounds reuse memory the first one freed: only the first shows the growth.
        row(f"daemon memory per peer (RSS growth), {label}", f"{rss_per_peer[0]:.0f} B",
            "first round; target <= 150 B"
            + (f"; before issue 13: {before[2]}" if before else ""))


def bench_startup() -> None:
    plain, filtered = [], []
    prepared = prepare(BENCH_FILTER)
    for _ in range(3):
        with loaded_programs() as programs:
            plain.append(programs.compile_seconds)
        started = time.monotonic()
        prepared = prepare(BENCH_FILTER)
        with loaded_programs(BuildOptions(filter=prepared.translation)) as programs:
            filtered.append(time.monotonic() - started)
    print("start-up: median (min–max) of 3 interleaved rounds")
    row("compile + load (BCC, both programs)", Figure.of(plain).show("s", digits=2),
        "target <= 1 s with attach")
    row("libpcap + translate + compile + load, filter", Figure.of(filtered).show("s", digits=2),
        f"{BENCH_FILTER!r}; vs without a filter: "
        + show_difference(filtered, plain, "s", digits=2))


def bench_filter(bcc) -> None:  # type: ignore[no-untyped-def]
    """The translated filter against the same check written by hand."""
    prepared = prepare(BENCH_FILTER)
    with tempfile.TemporaryDirectory() as generated:
        (Path(generated) / GENERATED_FILTER_HEADER).write_text(prepared.translation.c_source)
        module = bcc.BPF(src_file=str(Path(__file__).parent / "bpf" / "filter_bench.c").encode(),
                         cflags=[f"-I{bpf_source_dir()}", f"-I{generated}"])
    translated = module.load_func(b"translated_verdict", bcc.BPF.XDP).fd
    handwritten = module.load_func(b"handwritten_verdict", bcc.BPF.XDP).fd
    print(f"filter {BENCH_FILTER!r}: translated vs hand-written C (XDP, test_run; "
          f"median (min–max) of {ROUNDS} interleaved rounds)")
    for label, frame in (("match (UDP/53 to the host)",
                          ip_frame("10.77.0.2", "10.77.0.1", "udp", 18, dport=53)),
                         ("no match (TCP)", ip_frame("10.77.0.2", "10.77.0.1", "tcp", 6))):
        assert libbpf.prog_test_run(translated, frame).retval == \
            libbpf.prog_test_run(handwritten, frame).retval
        ns = rounds_of({"ours": lambda: timed_ns(translated, frame),  # noqa: B023
                        "theirs": lambda: timed_ns(handwritten, frame)})  # noqa: B023
        row(f"  {label}", f"{Figure.of(ns['ours']).show('ns')} / "
            f"{Figure.of(ns['theirs']).show('ns')}",
            f"ratio {show_ratio(ns['ours'], ns['theirs'])} (target <= 1.1); translated vs "
            f"hand-written: {show_difference(ns['ours'], ns['theirs'], 'ns', resolution=1)}")
    module.cleanup()
    with loaded_programs(BuildOptions(filter=prepared.translation)) as programs:
        frame = ip_frame("10.77.0.2", "10.77.0.1", "udp", 18, dport=53)
        libbpf.prog_test_run(programs.xdp.fd, frame)
        whole = Figure.of([timed_ns(programs.xdp.fd, frame) for _ in range(ROUNDS)])
        row("  whole XDP program with the filter, known peer", whole.show("ns"),
            "vs the same without a filter above")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="100000,1000000",
                        help="comma-separated peer counts for the drain figures")
    parser.add_argument("--only-drain", action="store_true",
                        help="the drain figures alone (no compile, per-packet or filter runs)")
    args = parser.parse_args()
    if args.only_drain:
        ensure_headers()
        bench_drain([int(n) for n in args.peers.split(",")])
        return
    bcc = import_bcc()
    stub = ensure_headers()
    print(f"ncebpf bench — kernel {os.uname().release}, {os.cpu_count()} CPUs, headers: "
          f"{'stub tree ' + str(stub) if stub else 'kernel build tree'}")
    baseline = bcc.BPF(src_file=str(Path(__file__).parent / "bpf" / "baseline.c").encode(),
                       cflags=BuildOptions().cflags())
    baseline_fd = baseline.load_func(b"baseline_pass", bcc.BPF.XDP).fd
    floor_fd = baseline.load_func(b"baseline_percpu_update", bcc.BPF.XDP).fd
    bench_startup()
    with loaded_programs() as programs:
        bench_per_packet(programs, baseline_fd, floor_fd)
    bench_filter(bcc)
    bench_drain([int(n) for n in args.peers.split(",")])


if __name__ == "__main__":
    main()
