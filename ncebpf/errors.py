"""The exceptions ncebpf raises. Each carries the exit status the CLI uses.

Messages are one line and tell the user what to do next.
"""

from __future__ import annotations


class NcebpfError(Exception):
    """Root of every error ncebpf reports to the user (exit status 1)."""

    exit_code = 1


class UsageError(NcebpfError):
    """The command line, the machine or the interface does not allow the request (exit 2)."""

    exit_code = 2


class InterfaceNotFound(UsageError):
    def __init__(self, ifname: str) -> None:
        super().__init__(f"no network interface named {ifname!r}: see 'ip -br link' for the names")


class PrivilegeError(UsageError):
    pass


class BccMissing(UsageError):
    def __init__(self) -> None:
        super().__init__(
            "BCC's Python module is not importable: install it with "
            "'apt-get install python3-bpfcc' (not the unrelated PyPI package 'bcc') "
            "and run ncebpf from a venv made with --system-site-packages"
        )


class ForeignProgram(UsageError):
    """An XDP program that is not ncebpf's already sits on the interface."""


class InstanceRunning(UsageError):
    pass


class CompileError(NcebpfError):
    pass


class AttachError(NcebpfError):
    pass


class NotRunning(NcebpfError):
    pass


class KernelError(NcebpfError):
    """A bpf(2) or netlink call failed where it should not have."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
