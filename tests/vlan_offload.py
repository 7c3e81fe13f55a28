"""Attach tests/bpf/vlan_offload.c at TC egress of IFACE and exit; it stays attached.

    python vlan_offload.py IFACE VLAN_ID

Run inside a test namespace; removing the namespace removes the program.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bcc import BPF
from pyroute2 import IPRoute

from ncebpf.kernel.build import bpf_source_dir
from ncebpf.kernel.headers import ensure_headers

ensure_headers()
module = BPF(src_file=str(Path(__file__).parent / "bpf" / "vlan_offload.c").encode(),
             cflags=[f"-I{bpf_source_dir()}", f"-DVLAN_ID={int(sys.argv[2])}"])
program = module.load_func(b"vlan_offload", BPF.SCHED_CLS)
# Not ncebpf's attachment (that needs the interface's lock): a plain clsact filter
# that outlives this process, like a driver's setting.
with IPRoute() as ipr:
    index = ipr.link_lookup(ifname=sys.argv[1])[0]
    ipr.tc("add", "clsact", index)
    ipr.tc("add-filter", "bpf", index, 1, fd=program.fd, name="vlan_offload",
           parent="ffff:fff3", classid=1, direct_action=True, prio=1)
