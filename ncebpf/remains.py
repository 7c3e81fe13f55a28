"""What an instance that died without cleaning up left behind, and removing it.

An instance that exits removes its pid file last; one that was killed
(`kill -9`, the OOM killer) leaves it, with its control socket,
``<name>.iface`` and its programs on that interface. The instance is dead
when nobody holds its instance lock; the ncebpf programs on its interface
are its leftovers only when nobody holds the interface lock either: those
of a live instance that took the interface over since are that instance's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from ncebpf.config import Instance
from ncebpf.dumpfiles import scratch_files
from ncebpf.errors import InterfaceNotFound, KernelError, NcebpfError, PrivilegeError
from ncebpf.files import read_small_file
from ncebpf.lifecycle import is_ncebpf_process, read_pid
from ncebpf.locks import (
    InstanceLock,
    InterfaceBusy,
    InterfaceLock,
    Owner,
    describe,
    instance_holder,
    interface_owner,
    lock_path,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remains:
    """What a dead instance left; see find()."""

    pid: int | None  # from its pid file
    iface: str  # from <name>.iface; '' when unknown
    files: tuple[Path, ...]  # its pid file, control socket and iface file that still exist
    programs: tuple[str, ...]  # ncebpf programs on iface that no live instance owns
    iface_owner: Owner | None  # a live process that holds iface now: the programs are its
    unchecked: str  # why programs could not be looked for; '' when they were
    alive: bool = False  # its pid is a live ncebpf process after all, one without the lock

    @property
    def who(self) -> str:
        return f"pid {self.pid}" if self.pid else "pid unknown"


def _files(instance: Instance) -> tuple[Path, ...]:
    return tuple(path for path in (instance.pid_path, instance.control_path, instance.iface_path)
                 if path.exists() or path.is_symlink())


def _look(instance: Instance) -> Remains | None:
    from ncebpf.kernel.attach import ncebpf_programs
    from ncebpf.kernel.netif import ifindex_of

    files = _files(instance)
    if not files:
        return None
    iface = (read_small_file(instance.iface_path) or "").strip()
    programs: list[str] = []
    owner = None
    unchecked = ""
    if iface:
        try:
            owner = interface_owner(ifindex_of(iface))
            if owner is None:
                programs = ncebpf_programs(iface)
        except InterfaceNotFound:
            pass  # gone, and its programs with it
        except (KernelError, NetlinkError, PermissionError) as exc:
            unchecked = f"cannot look at the programs on {iface} ({exc}): run it as root"
    pid = read_pid(instance.pid_path)
    alive = pid is not None and pid != os.getpid() and is_ncebpf_process(pid)
    return Remains(pid, iface, files, tuple(programs), owner, unchecked, alive)


def unlocked_process(instance: Instance, pid: int | None) -> str:
    """A live ncebpf process in the pid file that does not hold the lock: never taken for dead.

    An ncebpf from before instance locks is one (after an upgrade in place);
    its programs and files are its own until it ends.
    """
    return (f"pid {pid} in {instance.pid_path} is an ncebpf process that does not hold "
            f"{lock_path(instance)} (an ncebpf from before instance locks, or another instance "
            f"that got the pid): if it is {instance.name}, end it with 'kill {pid}'")


def forget_pinned(instance: Instance) -> None:
    """The instance's pinned maps and checkpoint go: its data set has ended (stop, detach).
    Call with the instance lock held."""
    from ncebpf.checkpoint import scratch_files as checkpoint_scratch
    from ncebpf.kernel.pins import unpin

    if unpin(instance.pin_dir):
        log.info("removed the maps pinned in %s", instance.pin_dir)
    for path in (instance.checkpoint_path, *checkpoint_scratch(instance.checkpoint_path)):
        path.unlink(missing_ok=True)


def find(instance: Instance) -> Remains | None:
    """What the instance left if it is dead; None when it runs or left nothing."""
    if instance_holder(instance) is not None:
        return None
    return _look(instance)


@dataclass(frozen=True)
class Removed:
    """What remove() took away, and what it left for its owner."""

    pid: int | None
    iface: str
    programs: tuple[str, ...]
    files: tuple[Path, ...]
    kept_for: Owner | None  # a live owner of iface whose programs were left alone

    def programs_text(self) -> str:
        """'XDP program id 7 (native), TC egress filter and clsact qdisc from eth0', or ''."""
        if not self.programs:
            return ""
        *rest, last = self.programs
        listed = f"{', '.join(rest)} and {last}" if rest else last
        return f"{listed} from {self.iface}"

    def describe(self, name: str) -> str:
        """One line for `stop`, about an instance that was found dead."""
        if self.pid is None and not self.programs and not self.files:
            return f"{name} not running"
        parts = [self.programs_text()] if self.programs else []
        if self.files:
            parts.append("its stale files")
        text = f"{name} was dead ({f'pid {self.pid}' if self.pid else 'pid unknown'}): " \
            f"removed {', and '.join(parts) if parts else 'nothing'}"
        if self.kept_for is not None:
            text += (f"; {self.iface} is counted by {describe(self.kept_for)} now, "
                     "whose programs stay")
        return text


def remove(instance: Instance) -> Removed:
    """Remove what the dead instance left: its programs (if no live instance holds the
    interface) and its files. Holds the instance lock meanwhile, so a concurrent
    start of the same name is refused rather than raced.

    Raises InstanceRunning if the instance is alive after all, PrivilegeError
    when its programs need root to remove.
    """
    with InstanceLock(instance, tidying=True):
        remains = _look(instance)
        if remains is None:
            forget_pinned(instance)
            return Removed(None, "", (), (), None)
        if remains.alive:
            raise NcebpfError(unlocked_process(instance, remains.pid))
        programs: list[str] = []
        kept_for = remains.iface_owner
        if remains.iface and kept_for is None:
            try:
                with InterfaceLock(remains.iface, instance.name, counting=False) as held:
                    from ncebpf.kernel.attach import detach_leftovers

                    programs = detach_leftovers(held)
            except InterfaceNotFound:
                pass
            except InterfaceBusy as busy:
                kept_for = busy.owner
            except (KernelError, NetlinkError, PermissionError) as exc:
                raise PrivilegeError(
                    f"removing the programs {instance.name} left on {remains.iface} needs "
                    f"CAP_BPF and CAP_NET_ADMIN ({exc}): run it as root") from exc
            except NcebpfError as exc:
                log.warning("could not clean %s: %s", remains.iface, exc)
        forget_files(instance)
        forget_pinned(instance)
        return Removed(remains.pid, remains.iface, tuple(programs), remains.files, kept_for)


def forget_files(instance: Instance) -> tuple[Path, ...]:
    """Remove a dead instance's pid file, control socket, iface file and dump scratch files;
    the first three that were there. Call with the instance lock held."""
    files = _files(instance)
    for path in (*files, *scratch_files(instance)):
        path.unlink(missing_ok=True)
    return files


def detach_kept(instance: Instance, iface: str) -> tuple[str, ...]:
    """Remove the ncebpf programs that a run of instance stopped with --keep (or killed) left
    on iface; what went, in words. Call with the instance lock held, when the new run counts
    elsewhere (another interface, libpcap): nothing would ever replace them. Programs of a
    live instance that holds iface now are its own and stay. Raises PrivilegeError."""
    from ncebpf.kernel.attach import detach_leftovers

    try:
        with InterfaceLock(iface, instance.name, counting=False) as held:
            return tuple(detach_leftovers(held))
    except (InterfaceNotFound, InterfaceBusy):
        return ()  # gone with its programs, or another live instance's
    except (KernelError, NetlinkError, PermissionError) as exc:
        raise PrivilegeError(f"removing the programs left on {iface} needs CAP_BPF and "
                             f"CAP_NET_ADMIN ({exc}): run it as root") from exc


def kept_programs_line(old: str, new: str, mode: str, removed: tuple[str, ...],
                       packets: int | None, carried: bool) -> str:
    """The one log line of a start that detached a kept run's programs from another
    interface (detach_kept). packets: what they counted since the checkpoint (None:
    unknown); carried: the new run takes over their pinned maps, so those count. Pure."""
    where = "with libpcap" if mode == "pcap" else f"on {new}"
    what, verb = (f"the {packets} packets they counted since the last checkpoint", "are") \
        if packets is not None else ("what they counted since the last checkpoint", "is")
    fate = f"{verb} carried into this run (the same data set)" if carried else \
        f"{verb} dropped, with their pinned maps (another data set)"
    return (f"detached {', '.join(removed)} that an earlier run left counting on {old}, as "
            f"this one counts {where}: {what} {fate}")
