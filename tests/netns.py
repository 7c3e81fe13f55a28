"""Network namespaces for privileged tests: 10.77.0.0/16 and fd77::/16 only.

NetnsPair makes two namespaces joined by a veth pair and removes them on
exit, whatever happened. The local side is where ncebpf runs.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ncebpf.filter.frames import mac
from tests.sendframes import write_frames

TESTS = Path(__file__).resolve().parent
NCEBPF = [sys.executable, "-m", "ncebpf"]
PREFIX = "nct"
# How many times longer than on real hardware the tests wait for the machine: for a start-up,
# an exit, a subprocess. scripts/vm-test sets it under TCG emulation, which runs the guest about
# 10-20x slower. It never stretches what a test checks about ncebpf's own deadlines.
TIME_SCALE = float(os.environ.get("NCEBPF_TEST_TIME_SCALE", "1"))
# Daemons without the history (user space only, tested on the host): .ci/run's VM leg tests
# the kernel's side, where every start and stop of the history costs seconds under TCG.
NO_HISTORY = ["--no-history"] if os.environ.get("NCEBPF_TEST_NO_HISTORY") == "1" else []


def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run cmd to its end; timeout in seconds on real hardware (times TIME_SCALE)."""
    return subprocess.run(cmd, check=check, capture_output=True, text=True,
                          timeout=timeout * TIME_SCALE)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL if process is still there after timeout seconds (times
    TIME_SCALE); its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout * TIME_SCALE)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# Every namespace this process made: the suite answers for these, not for those of another
# run on the same machine (tests/conftest.py, nothing_left_behind).
CREATED: set[str] = set()


class NetnsPair:
    local_v4, remote_v4 = "10.77.0.1", "10.77.0.2"
    local_v6, remote_v6 = "fd77::1", "fd77::2"

    def __init__(self, remote_ipv6: bool = True, local_ipv6: bool = True) -> None:
        tag = PREFIX + secrets.token_hex(3)
        self.local, self.remote = f"{tag}l", f"{tag}r"
        self.local_if, self.remote_if = f"{tag}a", f"{tag}b"
        self.remote_ipv6 = remote_ipv6
        self.local_ipv6 = local_ipv6

    def __enter__(self) -> NetnsPair:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        CREATED.update((self.local, self.remote))
        run("ip", "netns", "add", self.local)
        run("ip", "netns", "add", self.remote)
        run("ip", "link", "add", "name", self.local_if, "netns", self.local, "type", "veth",
            "peer", "name", self.remote_if, "netns", self.remote)
        for ns, ifname, v4, v6, ipv6 in (
            (self.local, self.local_if, self.local_v4, self.local_v6, self.local_ipv6),
            (self.remote, self.remote_if, self.remote_v4, self.remote_v6, self.remote_ipv6),
        ):
            # No link-local address, no DAD: the stacks stay quiet, so every
            # frame on the link is one a test sent.
            self.ns(ns, "sysctl", "-qw", f"net.ipv6.conf.all.disable_ipv6={0 if ipv6 else 1}")
            self.ns(ns, "ip", "link", "set", ifname, "addrgenmode", "none")
            self.ns(ns, "ip", "addr", "add", f"{v4}/24", "dev", ifname)
            if ipv6:
                self.ns(ns, "ip", "addr", "add", f"{v6}/64", "dev", ifname, "nodad")
            self.ns(ns, "ip", "link", "set", ifname, "up")
            self.ns(ns, "ip", "link", "set", "lo", "up")  # for traffic to our own address
        self.local_mac = mac(self.link_mac(self.local, self.local_if))
        self.remote_mac = mac(self.link_mac(self.remote, self.remote_if))
        self.ns(self.local, "ip", "neigh", "add", self.remote_v4, "lladdr",
                self.remote_mac.hex(":"), "dev", self.local_if, "nud", "permanent")
        self.ns(self.remote, "ip", "neigh", "add", self.local_v4, "lladdr",
                self.local_mac.hex(":"), "dev", self.remote_if, "nud", "permanent")
        if self.remote_ipv6 and self.local_ipv6:
            self.ns(self.local, "ip", "neigh", "add", self.remote_v6, "lladdr",
                    self.remote_mac.hex(":"), "dev", self.local_if, "nud", "permanent")
            self.ns(self.remote, "ip", "neigh", "add", self.local_v6, "lladdr",
                    self.local_mac.hex(":"), "dev", self.remote_if, "nud", "permanent")

    def link_mac(self, ns: str, ifname: str) -> str:
        return self.ns(ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()

    def ns(self, ns: str, *cmd: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout)

    def popen(self, ns: str, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def send(self, ns: str, ifname: str, frames: list[bytes], workdir: Path, repeat: int = 1,
             rate: float = 0.0, resend_dropped: bool = False) -> int:
        path = workdir / f"frames-{secrets.token_hex(4)}.bin"
        write_frames(path, frames)
        out = self.ns(ns, sys.executable, str(TESTS / "sendframes.py"), ifname, str(path),
                      "--repeat", str(repeat), "--rate", str(rate),
                      *(["--resend-dropped"] if resend_dropped else []), timeout=600)
        return int(out.stdout)

    def inject_ingress(self, frames: list[bytes], workdir: Path, **kw: float) -> int:
        """Frames the local interface receives (sent from the remote side), each exactly
        once even where the veth would drop some (see sendframes.py)."""
        return self.send(self.remote, self.remote_if, frames, workdir,  # type: ignore[arg-type]
                         resend_dropped=True, **kw)

    def inject_egress(self, frames: list[bytes], workdir: Path, **kw: float) -> int:
        """Frames the local interface transmits (through its TC egress hook)."""
        return self.send(self.local, self.local_if, frames, workdir, **kw)  # type: ignore[arg-type]

    def xdp_attached(self) -> str:
        """The `ip link` XDP line of the local interface, '' when none."""
        out = self.ns(self.local, "ip", "-d", "link", "show", self.local_if).stdout
        return "\n".join(line.strip() for line in out.splitlines() if "prog/xdp" in line)

    def tc_egress_filters(self) -> str:
        return self.ns(self.local, "tc", "filter", "show", "dev", self.local_if, "egress").stdout

    def qdiscs(self) -> str:
        return self.ns(self.local, "tc", "qdisc", "show", "dev", self.local_if).stdout

    def close(self) -> None:
        # Deleting the link unregisters it (and frees its programs) now; a
        # namespace's own teardown happens later, in a kernel work queue.
        run("ip", "netns", "exec", self.local, "ip", "link", "del", self.local_if, check=False)
        for ns in (self.local, self.remote):
            # Kill anything still running in the namespace, then remove it.
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class DaemonProcess:
    """`ncebpf attach` running in the local namespace of a pair."""

    def __init__(self, pair: NetnsPair, workdir: Path, *args: str, name: str = "t",
                 with_iface: bool = True, resolve: bool = False) -> None:
        self.pair = pair
        for directory in ("state", "run"):
            (workdir / directory).mkdir(exist_ok=True)
        self.args = ["--name", name, "--statedir", str(workdir / "state"),
                     "--piddir", str(workdir / "run")]
        iface = ["--iface", pair.local_if] if with_iface else []
        # Tests never ask the machine's own DNS servers: only a test server, when asked to.
        names = [] if resolve else ["--no-resolve"]
        self.proc = pair.popen(pair.local, *NCEBPF, "attach", *iface, *names, *NO_HISTORY,
                               *self.args, *args)
        self.stderr = ""
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        from ncebpf.config import Instance
        from ncebpf.control import is_running

        instance = Instance(self.args[1], Path(self.args[3]), Path(self.args[5]))
        deadline = time.monotonic() + timeout * TIME_SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ncebpf attach exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            if is_running(instance):
                return
            time.sleep(0.05)
        raise AssertionError("ncebpf attach did not become ready")

    def dump(self) -> dict[str, object]:
        import json

        out = run(*NCEBPF, "dump", "--format", "json", *self.args)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        _, self.stderr = self.proc.communicate(timeout=timeout * TIME_SCALE)
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30 * TIME_SCALE)
