"""The instance lock and the interface lock: exclusive, named, and gone with their holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ncebpf.config import Instance
from ncebpf.errors import InstanceRunning, NcebpfError
from ncebpf.locks import (
    InstanceLock,
    InterfaceBusy,
    Owner,
    instance_holder,
    lock_path,
)
from ncebpf.remains import Removed
from tests.netns import NetnsPair

HOLD_INSTANCE = """
import sys, time
from pathlib import Path
from ncebpf.config import Instance
from ncebpf.locks import InstanceLock
with InstanceLock(Instance(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[2]))):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def holder(*cmd: str) -> Iterator[subprocess.Popen[str]]:
    """A process that prints 'held' once it holds a lock, and holds it until killed."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == "held\n", proc.stderr.read() if proc.stderr else line
            yield proc
        finally:
            proc.kill()


def test_the_instance_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    instance = Instance("a", tmp_path, tmp_path)
    assert instance_holder(instance) is None  # no lock file yet
    with holder(sys.executable, "-c", HOLD_INSTANCE, "a", str(tmp_path)) as proc:
        assert instance_holder(instance) == proc.pid
        with pytest.raises(InstanceRunning) as refused:
            InstanceLock(instance).__enter__()
        assert str(refused.value) == (f"an ncebpf instance named 'a' is already running "
                                      f"(pid {proc.pid}): stop it, or choose another --name")
        with InstanceLock(Instance("b", tmp_path, tmp_path)):  # another name is free
            pass
        os.kill(proc.pid, signal.SIGKILL)  # the kernel releases the lock, however it ends
        proc.wait()
    assert instance_holder(instance) is None
    with InstanceLock(instance):
        assert instance_holder(instance) == os.getpid()  # a probe never takes the lock
        assert lock_path(instance).read_text() == f"{os.getpid()}\n"
    assert instance_holder(instance) is None
    assert lock_path(instance).exists()  # never removed: that would race with a holder


def test_the_instance_lock_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "a.lock").symlink_to(target)
    with pytest.raises(OSError):
        InstanceLock(Instance("a", tmp_path, tmp_path)).__enter__()
    assert target.read_text() == "precious\n"


def test_the_instance_lock_never_truncates_a_file_linked_in(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    os.link(target, tmp_path / "a.lock")
    with pytest.raises(NcebpfError, match="it has 2 hard links; remove it"):
        InstanceLock(Instance("a", tmp_path, tmp_path)).__enter__()
    assert target.read_text() == "precious\n"


def test_interface_busy_says_who_and_what_to_do() -> None:
    counting = InterfaceBusy("eth0", Owner(12, "a", counting=True))
    assert str(counting) == ("eth0 is already counted by ncebpf instance 'a' (pid 12): stop it "
                             "first ('ncebpf stop --name a'), or count with --mode pcap, which "
                             "attaches nothing")
    assert counting.exit_code == 2
    assert str(InterfaceBusy("eth0", Owner(13, "a", counting=False))) == (
        "eth0 is being cleaned up by ncebpf (pid 13): try again in a moment")
    assert str(InterfaceBusy("eth0", None)).startswith(
        "eth0 is already counted by another ncebpf instance: stop it first "
        "('ncebpf stop --name NAME')")


def test_what_stop_says_it_removed(tmp_path: Path) -> None:
    pid_file = tmp_path / "a.pid"
    assert Removed(None, "", (), (), None).describe("a") == "a not running"
    both = Removed(7, "eth0", ("XDP program id 3 (native)", "TC egress filter", "clsact qdisc"),
                   (pid_file,), None)
    assert both.describe("a") == ("a was dead (pid 7): removed XDP program id 3 (native), TC "
                                  "egress filter and clsact qdisc from eth0, and its stale files")
    assert both.programs_text() == ("XDP program id 3 (native), TC egress filter and clsact "
                                    "qdisc from eth0")
    kept = Removed(7, "eth0", (), (pid_file,), Owner(9, "b", counting=True))
    assert kept.describe("a") == ("a was dead (pid 7): removed its stale files; eth0 is counted "
                                  "by ncebpf instance 'b' (pid 9) now, whose programs stay")


HOLD_INTERFACE = """
import sys, time
from ncebpf.locks import InterfaceLock
with InterfaceLock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""

ASK = """
import sys
from ncebpf.kernel.netif import ifindex_of
from ncebpf.locks import InterfaceBusy, InterfaceLock, interface_owner
owners = {interface_owner(ifindex_of(sys.argv[1])) for _ in range(int(sys.argv[2]))}
print(owners)
try:
    with InterfaceLock(sys.argv[1], "b"):
        print("acquired")
except InterfaceBusy as busy:
    print(busy)
"""


@pytest.mark.privileged
def test_the_interface_lock_names_its_holder_and_dies_with_it(pair: NetnsPair) -> None:
    ask = [sys.executable, "-c", ASK, pair.local_if]
    with holder("ip", "netns", "exec", pair.local, sys.executable, "-c", HOLD_INTERFACE,
                pair.local_if, "a") as proc:
        # More questions than the listen backlog: the holder's thread keeps answering.
        out = pair.ns(pair.local, *ask, "40").stdout.splitlines()
        assert out == [f"{{Owner(pid={proc.pid}, name='a', counting=True, ncebpf=True)}}",
                       f"{pair.local_if} is already counted by ncebpf instance 'a' "
                       f"(pid {proc.pid}): stop it first ('ncebpf stop --name a'), or count "
                       "with --mode pcap, which attaches nothing"]
        # Abstract addresses belong to the network namespace: the same index elsewhere is free.
        with NetnsPair() as other:
            index = "cat /sys/class/net/{}/ifindex"
            assert pair.ns(other.local, "sh", "-c", index.format(other.local_if)).stdout == \
                pair.ns(pair.local, "sh", "-c", index.format(pair.local_if)).stdout
            assert pair.ns(other.local, sys.executable, "-c", ASK, other.local_if,
                           "1").stdout.splitlines() == ["{None}", "acquired"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert pair.ns(pair.local, *ask, "1").stdout.splitlines() == ["{None}", "acquired"]


SQUAT = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0ncebpf/iface/" + sys.argv[1])
s.listen(1)
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.privileged
def test_a_process_squatting_the_interface_lock_is_named_not_trusted(pair: NetnsPair) -> None:
    index = pair.ns(pair.local, "cat", f"/sys/class/net/{pair.local_if}/ifindex").stdout.strip()
    with holder("ip", "netns", "exec", pair.local, sys.executable, "-c", SQUAT, index) as proc:
        out = pair.ns(pair.local, sys.executable, "-c", ASK, pair.local_if, "1").stdout
        assert out.splitlines()[1] == (
            f"pid {proc.pid}, which is not ncebpf, holds ncebpf's lock on {pair.local_if} (an "
            "abstract Unix socket, see 'ss -xlp | grep ncebpf/iface'): stop that process")


def test_a_live_ncebpf_without_the_lock_is_never_taken_for_dead(tmp_path: Path) -> None:
    """After an upgrade in place the old daemon holds no lock: stop must not clean up under it."""
    from tests.netns import NCEBPF, run

    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # ncebpf"]) \
            as old:
        try:
            (tmp_path / "a.pid").write_text(f"{old.pid}\n")
            (tmp_path / "a.iface").write_text("lo\n")
            args = ["--name", "a", "--piddir", str(tmp_path), "--statedir", str(tmp_path)]
            said = (f"pid {old.pid} in {tmp_path}/a.pid is an ncebpf process that does not "
                    f"hold {tmp_path}/a.lock (an ncebpf from before instance locks, or another "
                    f"instance that got the pid): if it is a, end it with 'kill {old.pid}'")
            status = run(*NCEBPF, "status", *args, check=False)
            assert (status.returncode, status.stdout.strip()) == (4, said)
            stop = run(*NCEBPF, "stop", *args, check=False)
            assert (stop.returncode, stop.stderr.strip()) == (1, f"Error: {said}")
            assert (tmp_path / "a.pid").is_file() and (tmp_path / "a.iface").is_file()
            assert old.poll() is None
        finally:
            old.kill()
