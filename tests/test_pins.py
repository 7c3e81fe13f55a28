"""What ncebpf says when the counting maps cannot be pinned, or when a start detaches an
earlier run's programs from another interface: one line each, with the way out. No root."""

from __future__ import annotations

import errno
from pathlib import Path

from ncebpf.kernel.pins import PinError, pin_fix, unpinned_warning
from ncebpf.remains import kept_programs_line

BPFFS = Path("/sys/fs/bpf")


def test_each_failure_names_its_own_way_out() -> None:
    assert "mount -t bpf bpf /sys/fs/bpf" in pin_fix(errno.EPERM, False, BPFFS)
    read_only = pin_fix(errno.EROFS, True, BPFFS)
    assert "ReadWritePaths=-/sys/fs/bpf/ncebpf" in read_only and "ncebpf@.service" in read_only
    assert "run ncebpf as root" in pin_fix(errno.EACCES, True, BPFFS)
    assert "--bpffs" in pin_fix(errno.EINVAL, True, BPFFS)


def test_the_warning_is_one_line_with_the_cost_and_the_fix() -> None:
    error = PinError("Read-only file system", errno.EROFS, mounted=True)
    line = unpinned_warning(BPFFS / "ncebpf" / "dns", error, BPFFS)
    assert "\n" not in line
    assert line.startswith("cannot pin the counting maps in /sys/fs/bpf/ncebpf/dns "
                           "(Read-only file system): counting without pins")
    assert "a crash what was counted since the last checkpoint" in line
    assert line.endswith(pin_fix(errno.EROFS, True, BPFFS))


def test_a_start_elsewhere_says_what_it_detached_and_what_becomes_of_the_counts() -> None:
    removed = ("TC ingress filter", "TC egress filter", "clsact qdisc")
    carried = kept_programs_line("eth0", "eth1", "tc", removed, 154, carried=True)
    assert carried == ("detached TC ingress filter, TC egress filter, clsact qdisc that an "
                       "earlier run left counting on eth0, as this one counts on eth1: the 154 "
                       "packets they counted since the last checkpoint are carried into this "
                       "run (the same data set)")
    dropped = kept_programs_line("eth0", "eth0", "pcap", removed[:1], None, carried=False)
    assert "as this one counts with libpcap: what they counted since the last checkpoint " \
        "is dropped, with their pinned maps" in dropped
