"""Run a command under the /sys part of a systemd unit's sandbox, without systemd.

    unshare -m --propagation private python tests/unit_sandbox.py UNIT -- COMMAND...

There is no systemd as PID 1 here, so tests/test_systemd_unit.py cannot start the
unit. This does, in a private mount namespace (the caller's `unshare -m`), what
systemd would do to /sys for the unit's ExecStart= (systemd.exec(5); systemd's
src/core/namespace.c and src/shared/mount-setup.c), then execs COMMAND:

1. bpffs at /sys/fs/bpf (mode=0700), as systemd mounts it at boot, when none is there.
2. The unit's ExecStartPre= lines prefixed "+" (full privileges, outside the sandbox),
   "-" ignoring their failure.
3. ProtectKernelTunables=yes: /sys, /sys/fs/bpf, /sys/kernel/debug and /sys/kernel/tracing
   read-only with everything mounted below them, except the unit's ReadWritePaths= below
   /sys, each bind-mounted onto itself first. An entry for the same path as a read-only one
   stays read-only (namespace.c: of two entries for one path the read-only one wins).

Only /sys is emulated: ProtectSystem=, PrivateTmp= and the rest are not, and
CapabilityBoundingSet= is the caller's (setpriv) job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

READ_ONLY_UNDER_TUNABLES = ("/sys", "/sys/fs/bpf", "/sys/kernel/debug", "/sys/kernel/tracing")


def service_section(unit: Path) -> dict[str, list[str]]:
    """Each key of [Service] with every value it is given (keys repeat in units)."""
    values: dict[str, list[str]] = {}
    section = False
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line == "[Service]"
        elif section and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info]


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def main(unit: Path, command: list[str]) -> None:
    service = service_section(unit)
    if "/sys/fs/bpf" not in mount_points():
        mount("-t", "bpf", "-o", "mode=0700", "bpf", "/sys/fs/bpf")
    for line in service.get("ExecStartPre", []):
        prefix = line[:len(line) - len(line.lstrip("-+@:!"))]
        if "+" not in prefix:
            continue  # runs inside the sandbox: not this emulation's business
        done = subprocess.run(line[len(prefix):].split())
        if done.returncode and "-" not in prefix:
            sys.exit(f"ExecStartPre= {line!r} failed")
    if service.get("ProtectKernelTunables", ["no"])[-1] == "yes":
        read_only = [p for p in READ_ONLY_UNDER_TUNABLES if os.path.isdir(p)]
        writable = []
        for entry in " ".join(service.get("ReadWritePaths", [])).split():
            path = entry.lstrip("-+")
            if not os.path.exists(path):
                if entry.startswith("-"):
                    continue
                sys.exit(f"ReadWritePaths= {path} does not exist")  # systemd fails the unit
            if under(path, "/sys") and path not in read_only:
                writable.append(path)
        entries = read_only + writable
        for path in entries:
            if path not in mount_points():
                mount("--bind", path, path)
        for top in read_only:
            others = [e for e in entries if e != top and under(e, top)]
            for point in mount_points():
                if under(point, top) and not any(under(point, e) for e in others):
                    mount("-o", "remount,bind,ro", point)
    os.execvp(command[0], command)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    main(Path(sys.argv[1]), sys.argv[separator + 1:])
