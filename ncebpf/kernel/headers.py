"""Kernel headers for BCC.

BCC compiles against ``/lib/modules/$(uname -r)/build``. Kernels without a
headers package (cloud and VM kernels) have no such tree, and ncebpf must not
write under /lib/modules. Our programs only need uapi definitions, so we build
a small tree instead — a handful of stub files plus symlinks to the uapi
headers that linux-libc-dev installs in /usr/include — and point
``BCC_KERNEL_SOURCE`` at it. BCC treats that variable as one merged tree: it
compiles with ``-I<tree>/include -I<tree>/include/uapi -I<tree>/arch/<arch>/…``
and force-includes ``include/linux/kconfig.h``.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

from ncebpf.errors import CompileError

USR_INCLUDE = Path("/usr/include")

# BCC's architecture directory names, by `uname -m`.
_BCC_ARCH = {"x86_64": "x86", "aarch64": "arm64", "ppc64le": "powerpc", "s390x": "s390"}

_KCONFIG_H = """\
/* BCC force-includes this file. Its helpers.h needs CONFIG_BPF_SYSCALL; the
 * byte-order macros normally come from kernel-internal headers. */
#define CONFIG_BPF_SYSCALL 1
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define htonl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#define ntohl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define htons(x) (x)
#define ntohs(x) (x)
#define htonl(x) (x)
#define ntohl(x) (x)
#endif
"""

_TYPES_H = """\
#ifndef _NCEBPF_STUB_LINUX_TYPES_H
#define _NCEBPF_STUB_LINUX_TYPES_H
#include <uapi/linux/types.h>
typedef __u8 u8;
typedef __s8 s8;
typedef __u16 u16;
typedef __s16 s16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
enum { false = 0, true = 1 };
typedef unsigned long size_t;
typedef unsigned long uintptr_t;
#endif
"""

_SOCKET_H = """\
/* The installed uapi <linux/if.h> includes <sys/socket.h>. */
#ifndef _NCEBPF_STUB_SYS_SOCKET_H
#define _NCEBPF_STUB_SYS_SOCKET_H
typedef unsigned short sa_family_t;
struct sockaddr { sa_family_t sa_family; char sa_data[14]; };
#endif
"""


def kernel_build_dir(release: str | None = None) -> Path:
    return Path("/lib/modules") / (release or platform.release()) / "build"


def has_kernel_headers(release: str | None = None) -> bool:
    return (kernel_build_dir(release) / "include" / "linux" / "kconfig.h").is_file()


def version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a `uname -r` string such as '6.18.44-fc-v595'."""
    numeric = release.split("-")[0].split("+")[0]
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in numeric.split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    return (major << 16) + (minor << 8) + min(patch, 255)


def _multiarch_asm() -> Path:
    for candidate in sorted(USR_INCLUDE.glob("*-linux-gnu*/asm")):
        return candidate
    if (USR_INCLUDE / "asm").is_dir():
        return USR_INCLUDE / "asm"
    raise CompileError(
        "no uapi asm headers in /usr/include: install them with 'apt-get install linux-libc-dev'"
    )


def _populate(tree: Path, release: str, machine: str) -> None:
    if not (USR_INCLUDE / "linux" / "if_ether.h").is_file():
        raise CompileError(
            "no uapi headers in /usr/include/linux: "
            "install them with 'apt-get install linux-libc-dev'"
        )
    arch = _BCC_ARCH.get(machine, machine)
    uapi_linux = tree / "include/uapi/linux"
    uapi_linux.mkdir(parents=True)
    for header in (USR_INCLUDE / "linux").iterdir():
        (uapi_linux / header.name).symlink_to(header)
    # BCC injects its own bpf.h; the installed one uses another include guard and clashes.
    (uapi_linux / "bpf.h").unlink()
    (uapi_linux / "bpf.h").write_text("/* BCC provides bpf.h itself */\n")
    (tree / "include/uapi/asm-generic").symlink_to(USR_INCLUDE / "asm-generic")
    (tree / f"arch/{arch}/include/uapi").mkdir(parents=True)
    (tree / f"arch/{arch}/include/uapi/asm").symlink_to(_multiarch_asm())
    (tree / f"arch/{arch}/include/asm").mkdir(parents=True)
    (tree / f"arch/{arch}/include/asm/page.h").write_text("#define PAGE_SIZE 4096\n")
    (tree / "include/linux").mkdir(parents=True)
    (tree / "include/linux/kconfig.h").write_text(_KCONFIG_H)
    (tree / "include/linux/types.h").write_text(_TYPES_H)
    (tree / "include/linux/version.h").write_text(
        f"#define LINUX_VERSION_CODE {version_code(release)}\n"
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
    )
    (tree / "include/linux/log2.h").write_text(
        "#define roundup_pow_of_two(n) (n) /* only BPF_STACK_TRACE uses it */\n"
    )
    (tree / "include/sys").mkdir(parents=True)
    (tree / "include/sys/socket.h").write_text(_SOCKET_H)


def stub_tree(cache_dir: Path, release: str | None = None, machine: str | None = None) -> Path:
    """Return a header stub tree for this kernel under cache_dir, building it once.

    The tree is built in a temporary directory and renamed into place, so a
    concurrent ncebpf never sees a half-built tree.
    """
    release = release or platform.release()
    machine = machine or platform.machine()
    tree = cache_dir / f"kstub-{release}"
    if (tree / "include/linux/kconfig.h").is_file():
        return tree
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".kstub-", dir=cache_dir))
    try:
        _populate(scratch, release, machine)
        try:
            scratch.rename(tree)
        except OSError:
            if not (tree / "include/linux/kconfig.h").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tree


def default_cache_dir() -> Path:
    explicit = os.environ.get("NCEBPF_CACHE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/cache/ncebpf")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ncebpf"


def ensure_headers() -> Path | None:
    """Make BCC find kernel headers; return the stub tree used, or None for the real headers.

    An explicit BCC_KERNEL_SOURCE from the user wins.
    """
    if os.environ.get("BCC_KERNEL_SOURCE") or has_kernel_headers():
        return None
    tree = stub_tree(default_cache_dir())
    os.environ["BCC_KERNEL_SOURCE"] = str(tree)
    return tree
