"""Files in directories ncebpf may share with others: opened without following links or
blocking, and believed only when they are ncebpf's own plain files (issue 9, item 5)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def not_our_own(fd: int) -> str:
    """Why the open file is not a plain file of ours with one link; "" when it is.

    A file ncebpf truncates or appends to as root must not be someone else's
    file linked in by name (a symbolic link is refused by O_NOFOLLOW, a hard
    link by the link count, a FIFO or device by its type).
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}"
    if st.st_nlink != 1:
        return f"it has {st.st_nlink} hard links"
    return ""


def read_small_file(path: Path, limit: int = 4096) -> str | None:
    """The text of a small plain file; None for anything else or when unreadable.

    Never blocks on a FIFO planted at path and never follows a link.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
