"""Send frames on an interface with AF_PACKET; run inside a test namespace.

    python sendframes.py IFACE FRAMES_FILE [--repeat N] [--rate PPS]

FRAMES_FILE holds frames as a 2-byte big-endian length followed by the
frame. Every frame is sent exactly once per repetition (a full socket
buffer is waited out, never skipped); prints the number of frames sent.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("iface")
    parser.add_argument("frames", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="frames per second; 0 = no pacing")
    args = parser.parse_args()
    frames = read_frames(args.frames)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sent = 0
    started = time.monotonic()
    for _ in range(args.repeat):
        for frame in frames:
            while True:
                try:
                    sock.send(frame)
                    break
                except OSError:  # ENOBUFS: the queue is full; wait, never drop
                    time.sleep(0.0005)
            sent += 1
            if args.rate and sent % 256 == 0:
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    print(sent)


if __name__ == "__main__":
    main()
