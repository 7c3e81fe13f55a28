"""Attach tests/bpf/foreign_pass.c in generic mode and exit; it stays attached.

    python foreign_xdp.py IFACE
"""

from __future__ import annotations

import sys
from pathlib import Path

from bcc import BPF

from ncebpf.kernel import libbpf
from ncebpf.kernel.headers import ensure_headers
from ncebpf.kernel.netif import ifindex_of

ensure_headers()
module = BPF(src_file=str(Path(__file__).parent / "bpf" / "foreign_pass.c").encode())
program = module.load_func(b"foreign_pass", BPF.XDP)
libbpf.xdp_attach(ifindex_of(sys.argv[1]), program.fd,
                  libbpf.XDP_FLAGS_SKB_MODE | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
