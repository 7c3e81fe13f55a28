"""Traffic through a tun device, from the process that owns it; run inside a test namespace.

    python tun_traffic.py TUN ICMP_IN UDP_OUT PEER LOCAL

Writes ICMP_IN echo requests of 84 bytes from PEER to LOCAL into the tun (the
kernel receives them on TUN; their checksum is 0, so nothing answers them),
then sends UDP_OUT datagrams of 128 bytes (IP length) from the local stack to
PEER, which leave through TUN while this process holds it. Prints nothing.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import time

from ncebpf.filter.frames import IPPROTO_ICMP, icmp_echo, ipv4

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def main() -> None:
    name, icmp_in, udp_out, peer, local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4], sys.argv[5]
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    packet = ipv4(peer, local, IPPROTO_ICMP, icmp_echo(bytes(56)))
    assert len(packet) == 84
    for _ in range(icmp_in):
        os.write(tun, packet)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(udp_out):
            sock.sendto(bytes(100), (peer, 5353))  # 20 + 8 + 100 bytes of IP
    time.sleep(0.3)  # the last datagrams leave through the tun while it is still open
    os.close(tun)


if __name__ == "__main__":
    main()
