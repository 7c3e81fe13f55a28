"""Send frames with sendmmsg(2) at a paced rate; run inside a bench namespace.

    python blast.py IFACE FRAMES_FILE COUNT RATE

Prints the number of frames sent and the seconds it took.
"""

from __future__ import annotations

import ctypes as ct
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.sendframes import read_frames  # noqa: E402

BATCH = 256
libc = ct.CDLL(None, use_errno=True)


class IoVec(ct.Structure):
    _fields_ = [("base", ct.c_void_p), ("len", ct.c_size_t)]


class MsgHdr(ct.Structure):
    _fields_ = [("name", ct.c_void_p), ("namelen", ct.c_uint32), ("iov", ct.POINTER(IoVec)),
                ("iovlen", ct.c_size_t), ("control", ct.c_void_p), ("controllen", ct.c_size_t),
                ("flags", ct.c_int)]


class MMsgHdr(ct.Structure):
    _fields_ = [("hdr", MsgHdr), ("len", ct.c_uint)]


def main() -> None:
    iface, path, count, rate = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    frames = read_frames(path)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    buffers = [ct.create_string_buffer(f, len(f)) for f in frames]
    # One message per frame (at least a batch's worth), sent in turn: every frame goes out,
    # however many (bench/top_bench.py cycles through 100 000 peers).
    slots = max(BATCH, len(buffers))
    iovs = (IoVec * slots)()
    msgs = (MMsgHdr * slots)()
    for i in range(slots):
        frame = buffers[i % len(buffers)]
        iovs[i].base, iovs[i].len = ct.addressof(frame), len(frame)
        msgs[i].hdr.iov, msgs[i].hdr.iovlen = ct.pointer(iovs[i]), 1
    sent, started, at = 0, time.monotonic(), 0
    while sent < count:
        batch = min(BATCH, count - sent, slots - at)
        done = libc.sendmmsg(sock.fileno(), ct.byref(msgs, at * ct.sizeof(MMsgHdr)), batch, 0)
        if done < 0:
            if ct.get_errno() not in (105, 11):  # ENOBUFS, EAGAIN: wait, never drop
                raise OSError(ct.get_errno(), os.strerror(ct.get_errno()))
            time.sleep(0.0002)
            continue
        sent += done
        at = (at + done) % slots
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
    print(sent, f"{time.monotonic() - started:.3f}")


if __name__ == "__main__":
    main()
