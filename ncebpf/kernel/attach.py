"""Attach ncebpf's programs to an interface, and undo exactly that.

XdpAttachment and TcAttachment are context managers: on exit they
remove only the program they attached (a program someone attached in the
meantime stays), restore a foreign XDP program that --force displaced, and
delete the clsact qdisc only if they created it and it is empty.

Everything here that replaces or removes ncebpf's own programs takes the
interface's lock (ncebpf.locks.InterfaceLock) as its proof of ownership:
with it held, no live instance uses the interface, so an ncebpf program
found there is a leftover of a run that died, recognised by name. Without
the lock nothing of ncebpf's is touched: it may belong to a live instance.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ncebpf.errors import AttachError, ForeignProgram, KernelError, UsageError
from ncebpf.kernel import libbpf
from ncebpf.kernel.build import PROGRAM_NAMES
from ncebpf.kernel.features import FEATURE_BY_NAME, probe
from ncebpf.kernel.netif import Link, ifindex_of
from ncebpf.locks import InterfaceLock

log = logging.getLogger(__name__)

XdpMode = Literal["auto", "native", "generic"]

_MODE_FLAGS = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}

TC_PARENTS = {"egress": 0xFFFFFFF3, "ingress": 0xFFFFFFF2}  # clsact ffff:fff3, ffff:fff2
TC_PRIO = 1  # run before other classifiers; ours returns TC_ACT_UNSPEC so they still run
TC_HANDLE = 0x4E43  # "NC"


GENERIC_XDP_INEXACT = ("generic XDP sees a GRO or GSO super-packet as one frame of the merged "
                      "length: a TCP stream in counts fewer packets and bytes than the wire "
                      "carried (--mode tc counts its segments)")
VETH_NATIVE_XDP = ("native XDP on a veth switches its peer to XDP's receive path while it is "
                   "attached: the peer loses TSO and its MTU is capped near 3,500 bytes")


@dataclass(frozen=True)
class HookPlan:
    """Where to count on one device.

    ingress is "xdp", "tc" or "" (not counted there); xdp_mode applies to
    "xdp"; mode is the data path the dump names ("xdp": XDP in, TC out;
    "tc": TC only); choice says which hook auto picked and why (to log
    at start), notes are warnings, one line each.
    """

    mode: str
    ingress: str
    egress: bool
    xdp_mode: XdpMode
    choice: str
    notes: tuple[str, ...]


def plan_hooks(mode: str, xdp_mode: XdpMode, ingress: bool, egress: bool,
               link: Link, xdp_payload_lack: str = "") -> HookPlan:
    """The hooks for `--mode` (auto, xdp or tc) on one device. Pure.

    auto counts ingress with TC: TC ingress sees GRO super-packets with
    their gso_segs and counts the segments, needs nothing of the driver
    and changes nothing; native XDP on a veth switches the peer's receive
    path (VETH_NATIVE_XDP), on other devices it makes drivers set up their
    rings anew, and generic XDP, auto's old fallback, counts super-packets
    as one frame (issue 10, items 6 and 7). An explicit --xdp-mode asks
    for XDP, as --mode xdp does; both keep working and say what they cost.
    On loopback every frame passes egress and then ingress: with both
    directions only egress is counted, so a frame counts once, as libpcap
    counts it (it drops the outgoing copy there).
    xdp_payload_lack, when a payload search is asked for and the kernel lacks
    bpf_xdp_load_bytes (5.18), says so (KernelFeatures.lack): then --mode xdp
    is refused (UsageError, one line), and auto with --xdp-mode counts
    ingress with TC, where the search works, and says so in one line.
    """
    notes: list[str] = []
    choice = ""
    if link.loopback and ingress and egress:
        ingress = False
        notes.append(f"{link.name} is loopback, where every frame passes egress and then "
                     f"ingress: counting each once, at egress")
    wants_xdp = mode == "xdp" or (mode == "auto" and xdp_mode != "auto")
    if wants_xdp and ingress and xdp_payload_lack:
        if mode == "xdp":
            raise UsageError(f"--match/--nomatch at XDP needs bpf_xdp_load_bytes and "
                             f"{xdp_payload_lack}: use --mode auto or tc, which search payload "
                             "at TC ingress")
        wants_xdp = False
        notes.append(f"{xdp_payload_lack}: --xdp-mode {xdp_mode} ignored on {link.name}, "
                     "ingress is counted with TC, where the payload search works")
    if not ingress:
        hook = ""
    elif wants_xdp:
        hook = "xdp"
        if xdp_mode == "generic":
            notes.append(f"{GENERIC_XDP_INEXACT} on {link.name}")
        elif link.kind == "veth":
            notes.append(f"{VETH_NATIVE_XDP} ({link.name}; --mode auto counts with TC)")
    else:
        hook = "tc"
        if mode == "auto":
            why = VETH_NATIVE_XDP if link.kind == "veth" else (
                "native XDP makes drivers set up their receive rings anew and caps the MTU "
                "on many, and " + GENERIC_XDP_INEXACT)
            choice = (f"counting ingress with TC on {link.name}, which counts GRO segments "
                      f"exactly and changes nothing: {why}")
    named = "xdp" if wants_xdp else "tc"
    return HookPlan(named, hook, egress, xdp_mode, choice, tuple(notes))


_replace_refused: list[str] = []  # the kernel's refusal of XDP_FLAGS_REPLACE, once known


def detach_xdp(ifindex: int, flags: int, expected_prog_fd: int) -> None:
    """Detach the XDP program on ifindex only if it is expected_prog_fd's program.

    With XDP_FLAGS_REPLACE (5.7) the kernel checks and detaches in one step.
    A kernel without it refuses the flag with EINVAL; then (and when the
    feature is masked) the attached program's id is compared with ours and
    the program detached after: a program someone attaches between the two
    steps would be removed, a window of one netlink round trip, said once
    in the log. KernelError (EEXIST) when another program is attached.
    """
    if probe().xdp_flags_replace and not _replace_refused:
        try:
            libbpf.xdp_detach(ifindex, flags, expected_prog_fd)
            return
        except KernelError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _replace_refused.append(str(exc))
            log.warning("this kernel lacks XDP_FLAGS_REPLACE (5.7): %s",
                        FEATURE_BY_NAME["xdp_flags_replace"].fallback)
    expected = libbpf.prog_info_by_fd(expected_prog_fd).id
    current = libbpf.xdp_query(ifindex).prog_id
    if current != expected:
        raise KernelError(f"detach XDP: program id {current or 'none'} is attached, not "
                          f"{expected}", errno.EEXIST)
    libbpf.xdp_attach(ifindex, -1, flags)


def _is_ours(name: str) -> bool:
    # The kernel keeps 15 characters of a program name.
    return any(name == own[:15] for own in PROGRAM_NAMES)


def _mode_flags(mode: str) -> int:
    return _MODE_FLAGS.get(mode, 0)


def _describe(info: libbpf.ProgInfo, state: libbpf.XdpState) -> str:
    return (f"XDP program id {info.id} {info.name!r} (tag {info.tag}, "
            f"{state.mode or 'unknown'} mode)")


def _foreign(ifname: str, info: libbpf.ProgInfo, state: libbpf.XdpState) -> ForeignProgram:
    return ForeignProgram(
        f"{ifname} already has {_describe(info, state)}; ncebpf will not replace it: "
        "remove it, or pass --force to displace it for this run"
    )


def refuse_foreign_xdp(ifname: str) -> None:
    """Raise ForeignProgram if an XDP program that is not ncebpf's sits on ifname."""
    current = libbpf.xdp_query(ifindex_of(ifname))
    if not current.prog_id:
        return
    info = libbpf.prog_info_by_id(current.prog_id)
    if not _is_ours(info.name):
        raise _foreign(ifname, info, current)


class XdpAttachment:
    """Attach the XDP program to the held interface; `mode` auto tries native, then generic."""

    def __init__(self, held: InterfaceLock, prog_fd: int, mode: XdpMode = "auto",
                 force: bool = False) -> None:
        self.ifname = held.ifname
        self.ifindex = held.ifindex
        self.prog_fd = prog_fd
        self.requested_mode: XdpMode = mode
        self.force = force
        self.mode = ""  # the mode actually used: native or generic
        self._displaced_fd: int | None = None  # a foreign program --force replaced
        self._displaced_mode = ""

    def __enter__(self) -> XdpAttachment:
        current = libbpf.xdp_query(self.ifindex)
        if current.prog_id and self._replace_ours(current):
            return self
        if current.prog_id:
            self._remove_existing(current)
        try:
            self._attach()
        except BaseException:
            self._restore_displaced()
            raise
        log.info("XDP program attached to %s in %s mode", self.ifname, self.mode)
        return self

    def _replace_ours(self, current: libbpf.XdpState) -> bool:
        """Put our program in place of ncebpf's, in one step (XDP_FLAGS_REPLACE, 5.7): no
        frame passes uncounted, as after `stop --keep`, `restart` or a crash the old one
        counts into the same pinned maps until then. False when it is not ncebpf's, is in
        another mode than asked, or the kernel cannot: then it goes the old way."""
        info = libbpf.prog_info_by_id(current.prog_id)
        if not _is_ours(info.name) or current.mode not in _MODE_FLAGS or \
                self.requested_mode not in ("auto", current.mode) or \
                not probe().xdp_flags_replace or _replace_refused:
            return False
        old_fd = libbpf.prog_fd_by_id(current.prog_id)
        try:
            libbpf.xdp_attach(self.ifindex, self.prog_fd, _mode_flags(current.mode),
                              old_prog_fd=old_fd)
        except KernelError as exc:
            log.warning("could not replace ncebpf's %s on %s in one step: %s",
                        _describe(info, current), self.ifname, exc)
            return False
        finally:
            os.close(old_fd)
        self.mode = current.mode
        log.info("XDP program on %s replaced ncebpf's %s in one step", self.ifname,
                 _describe(info, current))
        return True

    def _remove_existing(self, current: libbpf.XdpState) -> None:
        info = libbpf.prog_info_by_id(current.prog_id)
        described = _describe(info, current)
        if not _is_ours(info.name) and not self.force:
            raise _foreign(self.ifname, info, current)
        old_fd = libbpf.prog_fd_by_id(current.prog_id)
        try:
            detach_xdp(self.ifindex, _mode_flags(current.mode), old_fd)
        except BaseException:
            os.close(old_fd)
            raise
        if _is_ours(info.name):
            log.warning("replaced ncebpf's %s left on %s by a run that died", described,
                        self.ifname)
            os.close(old_fd)
        else:
            log.warning("displaced %s on %s for this run (--force); it is restored on exit",
                        described, self.ifname)
            self._displaced_fd, self._displaced_mode = old_fd, current.mode

    def _attach(self) -> None:
        modes = ["native", "generic"] if self.requested_mode == "auto" else [self.requested_mode]
        for mode in modes:
            try:
                libbpf.xdp_attach(self.ifindex, self.prog_fd,
                                  _mode_flags(mode) | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
            except KernelError as exc:
                if mode == modes[-1]:
                    raise AttachError(
                        f"cannot attach XDP to {self.ifname} in {mode} mode: {exc}"
                    ) from exc
                log.warning("native XDP unavailable on %s (%s); using generic mode, where %s",
                            self.ifname, exc, GENERIC_XDP_INEXACT)
                continue
            self.mode = mode
            return

    def _restore_displaced(self) -> None:
        if self._displaced_fd is None:
            return
        try:
            flags = _mode_flags(self._displaced_mode) | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST
            libbpf.xdp_attach(self.ifindex, self._displaced_fd, flags)
        except KernelError as exc:
            log.error("could not restore the XDP program ncebpf displaced on %s: %s",
                      self.ifname, exc)
        finally:
            os.close(self._displaced_fd)
            self._displaced_fd = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            detach_xdp(self.ifindex, _mode_flags(self.mode), self.prog_fd)
            log.info("XDP program detached from %s", self.ifname)
        except KernelError as err:
            # ENODEV: the interface is gone. EEXIST/ENOENT: someone replaced
            # or removed our program; theirs is not ours to remove.
            log.warning("left XDP on %s as it is: %s", self.ifname, err)
        self._restore_displaced()


def _ncebpf_tc_filters(ipr: IPRoute, ifindex: int, parent: int) -> list[tuple[int, int]]:
    """(prio, handle) of every ncebpf filter on one of the interface's clsact hooks."""
    found = []
    for msg in ipr.get_filters(index=ifindex, parent=parent):
        options = msg.get_attr("TCA_OPTIONS")
        if msg.get_attr("TCA_KIND") != "bpf" or not options:
            continue
        if _is_ours(options.get_attr("TCA_BPF_NAME") or ""):
            found.append((msg["info"] >> 16, msg["handle"]))
    return found


def _handle_text(parent: int) -> str:
    return f"{parent >> 16:x}:{parent & 0xFFFF:x}"


def _delete_tc_filter(ipr: IPRoute, ifindex: int, parent: int, prio: int, handle: int) -> None:
    ipr.tc("del-filter", "bpf", ifindex, handle, parent=_handle_text(parent), prio=prio)


def _clsact_is_empty(ipr: IPRoute, ifindex: int) -> bool:
    return not any(ipr.get_filters(index=ifindex, parent=parent)
                   for parent in TC_PARENTS.values())


class TcAttachment:
    """Attach the TC program at a clsact hook of the held interface; clsact only if absent."""

    def __init__(self, held: InterfaceLock, prog_fd: int, prog_name: str,
                 hook: str = "egress") -> None:
        self.ifname = held.ifname
        self.ifindex = held.ifindex
        self.prog_fd = prog_fd
        self.prog_name = prog_name
        self.hook = hook
        self.parent = TC_PARENTS[hook]
        self._created_clsact = False
        self._ipr: IPRoute | None = None

    def __enter__(self) -> TcAttachment:
        ipr = self._ipr = IPRoute()
        try:
            leftovers = _ncebpf_tc_filters(ipr, self.ifindex, self.parent)
            if (TC_PRIO, TC_HANDLE) in leftovers:
                # ncebpf's filter (a kept or crashed run): replaced in one step, so no
                # frame passes uncounted; the clsact it sits on is ours to remove later.
                ipr.tc("replace-filter", "bpf", self.ifindex, TC_HANDLE, fd=self.prog_fd,
                       name=self.prog_name, parent=_handle_text(self.parent), classid=1,
                       direct_action=True, prio=TC_PRIO)
                self._created_clsact = True
                for prio, handle in set(leftovers) - {(TC_PRIO, TC_HANDLE)}:
                    _delete_tc_filter(ipr, self.ifindex, self.parent, prio, handle)
                log.info("TC %s program on %s replaced ncebpf's in one step", self.hook,
                         self.ifname)
                return self
            for prio, handle in leftovers:
                log.warning("removed ncebpf's TC %s filter left on %s by a run that died",
                            self.hook, self.ifname)
                _delete_tc_filter(ipr, self.ifindex, self.parent, prio, handle)
            if leftovers and _clsact_is_empty(ipr, self.ifindex):
                # The earlier run most likely created this clsact: ours to remove on exit.
                ipr.tc("del", "clsact", self.ifindex)
            try:
                ipr.tc("add", "clsact", self.ifindex)
                self._created_clsact = True
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            ipr.tc("add-filter", "bpf", self.ifindex, TC_HANDLE, fd=self.prog_fd,
                   name=self.prog_name, parent=_handle_text(self.parent), classid=1,
                   direct_action=True,
                   prio=TC_PRIO)
        except NetlinkError as exc:
            self._undo_clsact()
            ipr.close()
            raise AttachError(f"cannot attach TC {self.hook} on {self.ifname}: "
                              f"{os.strerror(exc.code)}") from exc
        log.info("TC %s program attached to %s", self.hook, self.ifname)
        return self

    def _undo_clsact(self) -> None:
        assert self._ipr is not None
        if self._created_clsact and _clsact_is_empty(self._ipr, self.ifindex):
            self._ipr.tc("del", "clsact", self.ifindex)
        self._created_clsact = False

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._ipr is not None
        try:
            _delete_tc_filter(self._ipr, self.ifindex, self.parent, TC_PRIO, TC_HANDLE)
            self._undo_clsact()
            log.info("TC %s program detached from %s", self.hook, self.ifname)
        except NetlinkError as err:
            log.warning("left TC %s on %s as it is: %s", self.hook, self.ifname,
                        os.strerror(err.code))
        finally:
            self._ipr.close()


def _xdp_leftover(ifindex: int) -> tuple[libbpf.XdpState, libbpf.ProgInfo] | None:
    current = libbpf.xdp_query(ifindex)
    if not current.prog_id:
        return None
    info = libbpf.prog_info_by_id(current.prog_id)
    return (current, info) if _is_ours(info.name) else None


def ncebpf_programs(ifname: str) -> list[str]:
    """ncebpf's programs on ifname, in words; nothing is changed.

    Whether they are leftovers depends on whether a live instance holds the
    interface; the caller asks ncebpf.locks. Looking at an XDP program's
    name needs CAP_SYS_ADMIN or CAP_BPF: KernelError without it.
    """
    ifindex = ifindex_of(ifname)
    found = []
    xdp = _xdp_leftover(ifindex)
    if xdp is not None:
        found.append(f"XDP program id {xdp[1].id} ({xdp[0].mode})")
    with IPRoute() as ipr:
        for hook, parent in TC_PARENTS.items():
            found += [f"TC {hook} filter"] * len(_ncebpf_tc_filters(ipr, ifindex, parent))
    return found


def detach_unused_hooks(held: InterfaceLock, xdp: bool, tc_ingress: bool,
                        tc_egress: bool) -> list[str]:
    """Remove ncebpf's programs from the hooks of the held interface that this run does not
    count on (False above); what went, in words ("XDP program id N (native)", "TC ingress
    filter"). Call after this run's own programs are attached.

    An earlier run of another --mode (stop --keep, restart, or killed) left its ingress
    program on the other hook, counting into the same pinned maps: kept there, it would count
    every frame a second time, and stay attached after this run's stop. The two are on
    different hooks, so no one-step replacement exists: this run's program is attached
    first and the old one removed after, so a frame in between may count twice, none is
    lost. An emptied clsact qdisc goes too when this run uses no TC hook (detach_leftovers'
    rule). Foreign programs are never touched."""
    ifindex = held.ifindex
    removed = []
    leftover = _xdp_leftover(ifindex) if not xdp else None
    if leftover is not None:
        current, info = leftover
        fd = libbpf.prog_fd_by_id(current.prog_id)
        try:
            detach_xdp(ifindex, _mode_flags(current.mode), fd)
        finally:
            os.close(fd)
        removed.append(f"XDP program id {info.id} ({current.mode})")
    unused = [hook for hook, used in (("ingress", tc_ingress), ("egress", tc_egress))
              if not used]
    with IPRoute() as ipr:
        for hook in unused:
            parent = TC_PARENTS[hook]
            for prio, handle in _ncebpf_tc_filters(ipr, ifindex, parent):
                _delete_tc_filter(ipr, ifindex, parent, prio, handle)
                removed.append(f"TC {hook} filter")
        if any(r.startswith("TC ") for r in removed) and not (tc_ingress or tc_egress) and \
                _clsact_is_empty(ipr, ifindex):
            ipr.tc("del", "clsact", ifindex)
            removed.append("clsact qdisc")
    return removed


def detach_leftovers(held: InterfaceLock) -> list[str]:
    """Remove the ncebpf programs that a dead run left on the held interface; say what went.

    Foreign programs are never touched. An empty clsact qdisc is removed too:
    without filters it does nothing, and a dead run cannot tell us whether it
    created it.
    """
    return detach_unused_hooks(held, xdp=False, tc_ingress=False, tc_egress=False)
