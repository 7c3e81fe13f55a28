"""Whether this process may load and attach BPF programs."""

from __future__ import annotations

from pathlib import Path

from ncebpf.errors import PrivilegeError

CAP_NET_RAW = 13
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_bpf_privileges() -> bool:
    """CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies both), and CAP_NET_ADMIN.

    Without CAP_PERFMON the verifier refuses our programs' packet-pointer
    arithmetic ("pointer -= pointer prohibited"), so CAP_BPF alone is not enough.
    """
    caps = effective_capabilities()
    has_bpf = caps & (1 << CAP_SYS_ADMIN) or (
        caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON))
    return bool(has_bpf and caps & (1 << CAP_NET_ADMIN))


def require_bpf_privileges(command: str) -> None:
    if not has_bpf_privileges():
        raise PrivilegeError(
            f"{command} needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN to load and attach "
            "programs: run it as root (sudo)"
        )


def require_capture_privileges(command: str) -> None:
    """Enough to count at all: the kernel path, or at least a libpcap capture."""
    if not has_bpf_privileges() and not effective_capabilities() & (1 << CAP_NET_RAW):
        raise PrivilegeError(
            f"{command} needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN for the kernel path, or "
            "CAP_NET_RAW for a libpcap capture: run it as root (sudo)"
        )
