"""Which kernel features ncebpf may use here: probed once per process, never read off the version.

Distribution kernels backport BPF features (RHEL 9's 5.14 carries much of
later kernels' BPF), so each feature is asked of the kernel itself: a
helper by loading a tiny program that calls it (libbpf's
libbpf_probe_bpf_helper), a map operation by trying it on a tiny map made
for the purpose. Only XDP_FLAGS_REPLACE needs an interface to be tried;
ncebpf.kernel.attach finds out at the first detach instead (the kernel
refuses an unknown flag with EINVAL) and falls back there.

NCEBPF_KERNEL_WITHOUT (a test aid: comma-separated FEATURES names) masks
features as if the kernel lacked them, so that the fallbacks run, and are
tested, on kernels that have everything; every line that reports a masked
feature says it was masked.

Probing loads programs and creates maps: it needs the BPF privileges the
kernel path needs anyway. Without them nothing is probed and every feature
is taken as present (the kernel path is not taken then).
"""

from __future__ import annotations

import ctypes as ct
import errno
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from ncebpf.errors import KernelError, UsageError
from ncebpf.kernel import libbpf
from ncebpf.kernel.privileges import has_bpf_privileges

log = logging.getLogger(__name__)

MASK_VARIABLE = "NCEBPF_KERNEL_WITHOUT"

# enum bpf_prog_type and enum bpf_map_type in uapi/linux/bpf.h (stable ABI).
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6
BPF_MAP_TYPE_PERCPU_HASH = 5
# enum bpf_func_id: the position in uapi/linux/bpf.h's __BPF_FUNC_MAPPER list
# (a stable ABI; tests/test_kernel_features.py holds the table to the header).
HELPER_IDS = {
    "skb_load_bytes": 26,
    "skb_pull_data": 39,
    "jiffies64": 118,
    "xdp_load_bytes": 189,
}
ENOTSUPP = 524  # the kernel-internal "not supported" that bpf(2) leaks to user space
MISSING_ERRNOS = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)  # an old kernel's refusals


@dataclass(frozen=True)
class FeatureInfo:
    """One kernel feature: its name (as NCEBPF_KERNEL_WITHOUT spells it), what it is,
    the first mainline kernel that has it, what ncebpf uses it for, and the
    path ncebpf takes without it."""

    name: str
    title: str
    since: str
    used_for: str
    fallback: str


FEATURES = (
    FeatureInfo("bpf_jiffies64", "bpf_jiffies64", "5.5",
                "the verifier limits and helpers of its kernel generation (probed in their "
                "place; the programs no longer call it)",
                "libpcap capture in user space (--mode auto); --mode xdp and tc refuse"),
    FeatureInfo("tc_skb_helpers", "bpf_skb_load_bytes and bpf_skb_pull_data at TC", "4.9",
                "the TC program's reads past the linear data (filter, payload, TCP header)",
                "libpcap capture in user space (--mode auto); --mode xdp and tc refuse"),
    FeatureInfo("bpf_xdp_load_bytes", "bpf_xdp_load_bytes", "5.18",
                "the payload search (--match/--nomatch) in the XDP program",
                "the payload search runs at TC ingress (--mode auto); --mode xdp refuses"),
    FeatureInfo("batch_ops", "BPF_MAP_LOOKUP_BATCH", "5.6",
                "each drain reads the peer map 8192 entries a syscall",
                "each drain reads the peer map key by key (two syscalls a peer: slower)"),
    FeatureInfo("hash_lookup_and_delete", "BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps", "5.14",
                "evicting an idle peer and reading its last counts in one step",
                "lookup, then delete: a packet of the peer between the two counts in the "
                "totals, not under the peer"),
    FeatureInfo("xdp_flags_replace", "XDP_FLAGS_REPLACE", "5.7",
                "detaching our XDP program only if it is still the one attached",
                "the attached program's id is checked, then it is detached (not atomic)"),
)
FEATURE_BY_NAME = {feature.name: feature for feature in FEATURES}
# Kernels with bpf_jiffies64 (5.5) have the rest of what the programs need:
# clsact (4.5), generic XDP and XDP test runs (4.12), __sk_buff->gso_segs
# (5.1), the 1 M-instruction verifier budget (5.2) and bounded loops (5.3).
IMPLIED = "clsact, generic XDP, gso_segs, 1 M-instruction verifier budget, bounded loops"


@dataclass(frozen=True)
class KernelFeatures:
    """The kernel features ncebpf may use: one bool per FEATURES entry, True = use it.

    probed is False when nothing could be asked (not_probed says why); the
    bools are then all True. denied is True when the kernel refused the probe
    itself (EPERM: root in a user namespace, a seccomp or LSM policy), so that
    the kernel path cannot work either. masked names the features NCEBPF_KERNEL_WITHOUT
    turned off (their bools are False whatever the kernel has).
    xdp_flags_replace is not probed: see the module docstring.
    """

    bpf_jiffies64: bool = True
    tc_skb_helpers: bool = True
    bpf_xdp_load_bytes: bool = True
    batch_ops: bool = True
    hash_lookup_and_delete: bool = True
    xdp_flags_replace: bool = True
    probed: bool = True
    not_probed: str = ""
    masked: frozenset[str] = frozenset()
    denied: bool = False  # the kernel refused BPF itself (EPERM): no program can load here

    def has(self, name: str) -> bool:
        return bool(getattr(self, name))

    def missing(self) -> list[FeatureInfo]:
        return [feature for feature in FEATURES if not self.has(feature.name)]

    def state(self, name: str) -> str:
        """'yes', 'no', 'masked', 'not probed' or, for XDP_FLAGS_REPLACE, 'at attach'."""
        if name in self.masked:
            return "masked"
        if not self.probed:
            return "not probed"
        if name == "xdp_flags_replace":
            return "at attach"
        return "yes" if self.has(name) else "no"

    def lack(self, name: str) -> str:
        """'this kernel lacks X (5.18)', or that NCEBPF_KERNEL_WITHOUT masks it."""
        feature = FEATURE_BY_NAME[name]
        return (f"{MASK_VARIABLE} masks {feature.title} (test aid)" if name in self.masked
                else f"this kernel lacks {feature.title} ({feature.since})")

    def fallback_line(self, name: str) -> str:
        """The one line that says a feature is missing (or masked) and what ncebpf does."""
        return f"{self.lack(name)}: {FEATURE_BY_NAME[name].fallback}"

    def kernel_path_refusal(self) -> str | None:
        """Why the kernel programs cannot load here, or None when they can."""
        if self.denied:
            return (f"the kernel refuses BPF to this process ({self.not_probed}): in a user "
                    "namespace or a container ncebpf needs CAP_BPF, CAP_PERFMON and "
                    "CAP_NET_ADMIN of the host")
        for name in ("bpf_jiffies64", "tc_skb_helpers"):
            if not self.has(name):
                return (f"{self.lack(name)}, which ncebpf's programs need for "
                        f"{FEATURE_BY_NAME[name].used_for}")
        return None

    def summary(self) -> str:
        """One line: every feature and its state, for the debug log."""
        states = ", ".join(f"{f.name} {self.state(f.name)}" for f in FEATURES)
        return f"kernel features: {states}" + (f" ({self.not_probed})" if self.not_probed
                                               else "")


def masked_names(value: str) -> frozenset[str]:
    """The feature names in NCEBPF_KERNEL_WITHOUT's value; UsageError for an unknown one
    (a typo must not leave a test of a fallback testing nothing)."""
    names = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(names - FEATURE_BY_NAME.keys())
    if unknown:
        raise UsageError(f"{MASK_VARIABLE} names unknown kernel features {', '.join(unknown)}: "
                         f"known are {', '.join(FEATURE_BY_NAME)}")
    return names


def combine(found: Mapping[str, bool], masked: frozenset[str], not_probed: str = "",
            denied: bool = False) -> KernelFeatures:
    """KernelFeatures from probe results (missing names count as present) and masks. Pure.

    With not_probed (why nothing could be asked) the results are ignored;
    denied says the kernel refused the probe (see KernelFeatures).
    """
    if not_probed:
        found = {}
    values = {f.name: found.get(f.name, True) and f.name not in masked for f in FEATURES}
    return KernelFeatures(**values, probed=not not_probed, not_probed=not_probed,
                          masked=masked, denied=denied)


# libbpf_probe_bpf_helper loads a program that calls the helper and says
# "missing" when the verifier calls the helper unknown. Since 6.x the verifier
# words a helper it knows but refuses for the program type differently, which
# libbpf 1.1 takes for "present"; no helper probed here is ever refused for
# its program type on a kernel that knows it, so the answer stays exact.
def has_bpf_jiffies64() -> bool:
    """bpf_jiffies64 callable from XDP programs (mainline 5.5).

    The programs no longer call it (the kernel keeps no time stamps since
    issue 13); a kernel that has it has everything they need (IMPLIED), so it
    stays the probe of that generation of kernel.
    """
    return libbpf.probe_helper(BPF_PROG_TYPE_XDP, HELPER_IDS["jiffies64"])


def has_tc_skb_helpers() -> bool:
    """bpf_skb_load_bytes (4.5) and bpf_skb_pull_data (4.9) in TC (sched_cls) programs.

    The TC program reads the TCP header, the filter's bytes and the payload
    window past the skb's linear data with them.
    """
    return all(libbpf.probe_helper(BPF_PROG_TYPE_SCHED_CLS, HELPER_IDS[name])
               for name in ("skb_load_bytes", "skb_pull_data"))


def has_bpf_xdp_load_bytes() -> bool:
    """bpf_xdp_load_bytes callable from XDP programs (mainline 5.18).

    The XDP program copies the payload window with it for --match/--nomatch.
    """
    return libbpf.probe_helper(BPF_PROG_TYPE_XDP, HELPER_IDS["xdp_load_bytes"])


def _with_probe_map(attempt: Callable[[int, ct.Array[ct.c_char], ct.Array[ct.c_char]], object],
                    map_type: int = BPF_MAP_TYPE_PERCPU_HASH) -> bool:
    """Run attempt(fd, key, value) on a fresh 2-entry map of map_type (by default the
    peer map's, a per-CPU hash) holding key 0, 4-byte keys, 8-byte values; True
    unless the kernel refuses the operation as unsupported.

    KernelError for any other failure: the probe could not decide.
    """
    key = ct.create_string_buffer(4)
    value = ct.create_string_buffer(8 * libbpf.possible_cpus())
    fd = libbpf.map_create(map_type, b"ncebpf_probe", 4, 8, 2)
    try:
        libbpf.map_update(fd, key.raw, value.raw)
        attempt(fd, key, value)
    except KernelError as exc:
        if exc.errno in MISSING_ERRNOS:
            return False
        raise
    finally:
        os.close(fd)
    return True


def has_batch_ops() -> bool:
    """BPF_MAP_LOOKUP_BATCH on per-CPU hash maps (mainline 5.6; before, bpf(2) says EINVAL).

    Each drain reads the whole peer map with it, 8192 entries a call.
    """
    return _with_probe_map(lambda fd, key, value: list(
        libbpf.map_lookup_batches(fd, key, value, len(key), len(value))))


def has_hash_lookup_and_delete() -> bool:
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps (mainline 5.14; before, ENOTSUPP).

    Eviction of idle peers reads an entry's last counts and removes it in
    one step with it.
    """
    return _with_probe_map(lambda fd, key, value: libbpf.map_lookup_and_delete(
        fd, key.raw, value))


PROBES: dict[str, Callable[[], bool]] = {
    "bpf_jiffies64": has_bpf_jiffies64,
    "tc_skb_helpers": has_tc_skb_helpers,
    "bpf_xdp_load_bytes": has_bpf_xdp_load_bytes,
    "batch_ops": has_batch_ops,
    "hash_lookup_and_delete": has_hash_lookup_and_delete,
}


@cache
def probe() -> KernelFeatures:
    """Ask the kernel, once per process; masks from NCEBPF_KERNEL_WITHOUT applied.

    UsageError when NCEBPF_KERNEL_WITHOUT names an unknown feature. Never
    raises for the kernel's answers: a probe that cannot run leaves every
    feature taken as present, with not_probed saying why.
    """
    masked = masked_names(os.environ.get(MASK_VARIABLE, ""))
    if not has_bpf_privileges():
        return combine({}, masked, "not probed: needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN")
    found: dict[str, bool] = {}
    try:
        for name, has_feature in PROBES.items():
            found[name] = has_feature()
    except KernelError as exc:
        return combine({}, masked, f"not probed: {exc}",
                       denied=exc.errno in (errno.EPERM, errno.EACCES))
    features = combine(found, masked)
    log.debug("%s", features.summary())
    return features


def render(features: KernelFeatures, release: str) -> str:
    """`ncebpf explain --kernel`'s text: one row per feature (first mainline kernel,
    the answer here, what it is for) and, for each one ncebpf cannot use, the path
    it takes instead. Pure."""
    width = max(len(f.title) for f in FEATURES)
    lines = [f"kernel {release}: features probed, not read off the version" if features.probed
             else f"kernel {release}: features {features.not_probed}; taken as present",
             f"  {'feature':<{width}}  since  here        used for"]
    for feature in FEATURES:
        state = features.state(feature.name)
        lines.append(f"  {feature.title:<{width}}  {feature.since:<5}  {state:<10}  "
                     f"{feature.used_for}")
        if not features.has(feature.name):
            lines.append(f"  {'':<{width}}  {'':<5}  {'':<10}  without it: {feature.fallback}")
    lines.append(f"  implied by bpf_jiffies64 (5.5): {IMPLIED}")
    if features.denied:
        lines.append(f"  {features.kernel_path_refusal()}: ncebpf counts with libpcap "
                     "(--mode auto)")
    if "xdp_flags_replace" not in features.masked and features.probed:
        lines.append("  XDP_FLAGS_REPLACE needs an interface to try: ncebpf finds out at the "
                     "first detach and then checks the program's id before detaching")
    return "\n".join(lines)
