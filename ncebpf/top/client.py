"""`ncebpf top` asks the running instance for the counters that moved since its cursor."""

from __future__ import annotations

import errno
from typing import BinaryIO

from ncebpf.config import Instance
from ncebpf.control import _check_peer, _connect
from ncebpf.errors import NcebpfError, NotRunning
from ncebpf.top.wire import RECORD, Header, Records, WireError, decode, sizes


def request_changes(instance: Instance, cursor: str, timeout_s: float,
                    max_age_s: float | None = None
                    ) -> tuple[Header, Records, dict[int, list[str]]]:
    """(header, records, names by record position) of the peers that moved since cursor
    ("" for all of them; ncebpf.top.wire), as of a drain at most max_age_s old (the
    instance drains first when its last one is older; None: its own bound, 0.5 s).
    timeout_s bounds each read.

    Raises NotRunning when nothing listens, NcebpfError saying what access is needed
    when the socket is not ours to open, or with the instance's one-line reason."""
    path = instance.control_path
    try:
        sock = _connect(path, timeout_s)
    except OSError as exc:
        if exc.errno != errno.EACCES:
            raise
        raise NcebpfError(access_needed(instance)) from None
    if sock is None:
        raise NotRunning(
            f"no ncebpf instance named {instance.name!r} is running (nothing listens on "
            f"{path}): start one with 'ncebpf start --iface IFACE', or give the --name and "
            "--piddir it runs with")
    with sock:
        _check_peer(sock, instance)
        try:
            age = "" if max_age_s is None else f" {max_age_s:.3f}"
            sock.sendall(f"changes {cursor or '-'}{age}\n".encode())
            with sock.makefile("rb") as answer:
                line = answer.readline(512).decode(errors="replace")
                if not line:
                    raise NcebpfError(f"instance {instance.name!r} closed the connection "
                                      f"without answering: see its log {instance.log_path}")
                head_size, count, names_size = sizes(line)
                head = _read(answer, head_size)
                body = _read(answer, count * RECORD.itemsize)
                tail = _read(answer, names_size)
        except TimeoutError:
            raise NcebpfError(f"instance {instance.name!r} said nothing for {timeout_s:g} s: "
                              f"see its log {instance.log_path}") from None
        except (ConnectionResetError, BrokenPipeError):
            raise NcebpfError(f"instance {instance.name!r} hung up: see 'ncebpf status "
                              f"--name {instance.name}' and its log {instance.log_path}"
                              ) from None
        except WireError as exc:
            if str(exc).startswith("unknown request"):  # a daemon from before `top`
                raise NcebpfError(f"instance {instance.name!r} runs an ncebpf that cannot "
                                  "answer 'top': restart it with this version") from None
            raise NcebpfError(f"instance {instance.name!r}: {exc}") from None
    try:
        return decode(head, body, tail)
    except WireError as exc:
        raise NcebpfError(f"instance {instance.name!r}: {exc}") from None


def access_needed(instance: Instance) -> str:
    """What a user who may not open the control socket is told."""
    return (f"ncebpf top reads the counters through {instance.control_path}, which only "
            "root and the user the instance runs as may open: run it as root (sudo ncebpf "
            "top), or as that user")


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionResetError(errno.ECONNRESET, "short answer")
    return data
