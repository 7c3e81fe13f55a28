"""A TCP stream between the two sides of a pair, with the sender's own counts.

The sender reads TCP_INFO after the connection is closed both ways, so its
counts cover every segment it sent: the oracle for egress accounting.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from tests.netns import NetnsPair

TCP_SINK = """
import socket, sys
srv = socket.socket(); srv.bind((sys.argv[1], 7008)); srv.listen(1)
print('ready', flush=True)
conn, _ = srv.accept()
while conn.recv(1 << 16):
    pass
conn.close()
"""

TCP_SOURCE = """
import socket, struct, sys
stats = '/sys/class/net/%s/statistics/tx_packets' % sys.argv[3]
skbs_before = int(open(stats).read())
s = socket.socket(); s.bind((sys.argv[2], 0)); s.connect((sys.argv[1], 7008))
s.sendall(bytes(4 << 20))
s.shutdown(socket.SHUT_WR)
s.recv(1)  # returns b'' once the peer has closed: our last ACK is out
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
# struct tcp_info: tcpi_segs_out at offset 136, tcpi_data_segs_out at 156,
# tcpi_bytes_sent at 200 (Linux >= 4.19)
segs_out = struct.unpack_from('I', info, 136)[0]
data_segs_out = struct.unpack_from('I', info, 156)[0]
bytes_sent = struct.unpack_from('Q', info, 200)[0]
skbs = int(open(stats).read()) - skbs_before  # veth counts a GSO packet once
print(segs_out, bytes_sent, skbs, data_segs_out)
"""


class TcpStats(NamedTuple):
    segs_out: int  # every segment sent, GSO segments one by one
    bytes_sent: int  # payload bytes, retransmissions included
    skbs: int  # what the interface counted: a GSO packet once
    data_segs_out: int  # segments that carried payload


def tcp_stream(pair: NetnsPair, inbound: bool = False) -> TcpStats:
    """Send 4 MiB from the local side to the remote one (inbound: the other way round);
    return the sender's counts."""
    sender, receiver = (pair.remote, pair.local) if inbound else (pair.local, pair.remote)
    to, source, ifname = ((pair.local_v4, pair.remote_v4, pair.remote_if) if inbound
                          else (pair.remote_v4, pair.local_v4, pair.local_if))
    with pair.popen(receiver, sys.executable, "-c", TCP_SINK, to) as server:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = pair.ns(sender, sys.executable, "-c", TCP_SOURCE, to, source, ifname).stdout
        server.wait(timeout=10)
    return TcpStats(*(int(x) for x in out.split()))
