"""Send frames on an interface with AF_PACKET; run inside a test namespace.

    python sendframes.py IFACE FRAMES_FILE [--repeat N] [--rate PPS] [--resend-dropped]

FRAMES_FILE holds frames as a 2-byte big-endian length followed by the
frame. Every frame is sent exactly once per repetition (a full socket
buffer is waited out, never skipped); prints the number of frames sent.

--resend-dropped makes every frame arrive: a veth whose peer runs XDP hands
frames over through a 256-slot ring, and kernels before 6.16 drop a frame
when that ring is full instead of stopping the queue (a slow guest, such as
`make vm-test` under TCG, fills it). The drop is counted in the sender's
tx_dropped inside the send call, so the counter is read after each frame and
a dropped frame is sent again once the ring has room. Only for frames the
far end counts (ingress): a frame counted on its way out is counted before
the ring, and sending it again would count it twice.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import time
from pathlib import Path


def read_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    frames, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("!H", data, offset)
        frames.append(data[offset + 2:offset + 2 + length])
        offset += 2 + length
    return frames


def write_frames(path: Path, frames: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack("!H", len(f)) + f for f in frames))


class DropCounter:
    """The interface's tx_dropped, read without reopening the sysfs file."""

    def __init__(self, iface: str) -> None:
        self.fd = os.open(f"/sys/class/net/{iface}/statistics/tx_dropped", os.O_RDONLY)

    def read(self) -> int:
        return int(os.pread(self.fd, 32, 0))


def send_one(sock: socket.socket, frame: bytes, drops: DropCounter | None) -> None:
    waited = 0.0
    while True:
        before = drops.read() if drops else 0
        try:
            sock.send(frame)
        except OSError:  # ENOBUFS: the queue is full; wait, never drop
            time.sleep(0.0005)
            continue
        if drops is None or drops.read() == before:
            return
        if waited > 10:
            raise SystemExit("sendframes: the interface drops every frame for 10 s")
        time.sleep(0.001)  # the ring drains in the receiver's NAPI poll
        waited += 0.001


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("iface")
    parser.add_argument("frames", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="frames per second; 0 = no pacing")
    parser.add_argument("--resend-dropped", action="store_true",
                        help="send a frame again when the interface dropped it")
    args = parser.parse_args()
    frames = read_frames(args.frames)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    drops = DropCounter(args.iface) if args.resend_dropped else None
    sent = 0
    started = time.monotonic()
    for _ in range(args.repeat):
        for frame in frames:
            send_one(sock, frame, drops)
            sent += 1
            if args.rate and sent % 256 == 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    print(sent)


if __name__ == "__main__":
    main()
