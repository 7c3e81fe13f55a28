"""Each CPU benchmark peer's own count of the frames it saw, read from its real output."""

from __future__ import annotations

from bench.peer_counts import (
    Seen,
    darkstat_seen,
    ncebpf_seen,
    pmacct_sum,
    pmacctd_seen,
    process_ticks,
    tcpdump_seen,
)

# darkstat 3.0.719's front page after 30,000 frames of which libpcap dropped 12,180.
DARKSTAT_PAGE = (
    '<div class="content">\n<h2 class="pageheader">Graphs</h2>\n<p>\n'
    '<b>Measuring for</b> <span id="rf">4 secs</span><b>, since</b> '
    '2026-12-01 03:47:03 UTC+0000<b>.</b><br>\n'
    '<b>Seen</b> <span id="tb">819,720</span> <b>bytes, in</b> <span id="tp">17,820</span> '
    '<b>packets.</b> (<span id="pc">30,000</span> <b>captured,</b> '
    '<span id="pd">12,180</span> <b>dropped)</b><br>\n</p>'
)

# pmacctd 1.7.7's core as it exits (stdout), then its plugin's warnings (stderr).
MISSING = ("WARN ( default_memory/memory ): Missing data detected (plugin_buffer_size=10240 "
           "plugin_pipe_size=10240000).\n")
PMACCTD_LOG = (
    "NOTICE ( default/core ): +++\n"
    "NOTICE ( default/core ): [nct5d4d28a,0] received_packets=900000 dropped_packets=712084\n"
    "NOTICE ( default/core ): ---\n"
    + MISSING
    + "WARN ( default_memory/memory ): Increase values or look for plugin_buffer_size, "
    "plugin_pipe_size in CONFIG-KEYS document.\n"
    + MISSING
)

TCPDUMP_STDERR = (
    "tcpdump: listening on nct1a, link-type EN10MB (Ethernet), snapshot length 262144 bytes\n"
    "899744 packets captured\n"
    "900000 packets received by filter\n"
    "256 packets dropped by kernel\n"
)


def test_darkstat_counts_the_packets_it_accounted_for_not_those_libpcap_dropped() -> None:
    seen = darkstat_seen(DARKSTAT_PAGE)
    assert seen == Seen(17820, "libpcap: 30,000 captured, 12,180 dropped")


def test_a_darkstat_page_without_the_figures_says_so() -> None:
    assert darkstat_seen("<html><body>starting</body></html>").frames is None


def test_pmacctd_saw_what_libpcap_handed_its_core() -> None:
    seen = pmacctd_seen(PMACCTD_LOG, 180023)
    assert seen.frames == 900000 - 712084
    assert "in its memory table: 180,023" in seen.detail
    assert "'Missing data detected' 2 times" in seen.detail


def test_pmacctd_without_its_statistics_saw_what_its_table_counted() -> None:
    seen = pmacctd_seen("INFO ( default/core ): OK, Exiting ...\n", 399993)
    assert seen.frames == 399993 and "no libpcap statistics" in seen.detail
    seen = pmacctd_seen("INFO ( default/core ): OK, Exiting ...\n", None)
    assert seen.frames is None and "did not answer" in seen.detail


def test_pmacct_prints_one_sum_or_nothing_usable() -> None:
    assert pmacct_sum("5983\n") == 5983
    assert pmacct_sum("") is None
    assert pmacct_sum("ERROR: missing EOF from server\n") is None


def test_tcpdump_wrote_the_frames_it_captured() -> None:
    seen = tcpdump_seen(TCPDUMP_STDERR)
    assert seen.frames == 899744
    assert seen.detail == "tcpdump: 900000 received by filter, 256 dropped by kernel"


def test_ncebpf_saw_every_frame_it_counted_filtered_out_or_dropped() -> None:
    totals = {"packets": 899000, "bytes": 1, "filtered_out": 990, "dropped": 10}
    assert ncebpf_seen(totals).frames == 900000


def test_a_tool_that_saw_fewer_frames_than_were_sent_is_flagged() -> None:
    assert Seen(900000, "x").note(900000) == "saw 900,000 of 900,000 sent; x"
    assert Seen(187916, "x").note(900000).startswith("SAW FEWER: 187,916 of 900,000 sent")
    assert Seen(None, "x").note(900000).startswith("did not say")


def test_process_ticks_count_from_the_last_parenthesis_of_the_name() -> None:
    # proc(5): pid (comm) state ppid ... utime (14) stime (15) ...
    line = "4242 (pm (core) x) S 1 4242 4242 0 -1 4194560 120 0 0 0 37 5 0 0 20 0 1 0 99"
    assert process_ticks(line) == 42
