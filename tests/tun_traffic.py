"""Traffic through a tun device, from the process that owns it; run inside a test namespace.

    python tun_traffic.py TUN ICMP_IN UDP_OUT PEER LOCAL

Writes ICMP_IN echo requests of 84 bytes from PEER to LOCAL into the tun (the
kernel receives them on TUN; their checksum is 0, so nothing answers them),
then sends UDP_OUT datagrams of 128 bytes (IP length) from the local stack to
PEER and reads them back from the tun: once read, they have passed every
capture on TUN. Prints nothing; exits non-zero when they do not all come out.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from ncebpf.filter.frames import IPPROTO_ICMP, icmp_echo, ipv4

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def wait_for_carrier(name: str, timeout: float = 10) -> None:
    """Until the kernel has seen the carrier that attaching the tun raised.

    Attaching raises the carrier at once, but the link watch gives the device its
    queueing discipline later (up to a second): until then it has the noop qdisc, and
    a datagram sent through it is dropped after TC egress and before any capture."""
    deadline = time.monotonic() + timeout
    # operstate is set just before the qdisc in the same link-watch step; on a loaded
    # machine the step can be preempted between the two, so the qdisc is what is waited for.
    while Path(f"/sys/class/net/{name}/operstate").read_text().strip() != "up" or \
            " qdisc noop " in subprocess.run(["ip", "-o", "link", "show", "dev", name],
                                             capture_output=True, text=True,
                                             check=True).stdout:
        if time.monotonic() > deadline:
            raise SystemExit(f"tun_traffic: {name} is not up after {timeout:g} s")
        time.sleep(0.01)


def read_back(tun: int, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(count):
        ready, _, _ = select.select([tun], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise SystemExit("tun_traffic: a datagram never came out of the tun")
        os.read(tun, 2048)


def main() -> None:
    name, icmp_in, udp_out, peer, local = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4], sys.argv[5]
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    packet = ipv4(peer, local, IPPROTO_ICMP, icmp_echo(bytes(56)))
    assert len(packet) == 84
    wait_for_carrier(name)
    for _ in range(icmp_in):
        os.write(tun, packet)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(udp_out):
            sock.sendto(bytes(100), (peer, 5353))  # 20 + 8 + 100 bytes of IP
    read_back(tun, udp_out)
    os.close(tun)


if __name__ == "__main__":
    main()
