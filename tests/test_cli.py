from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ncebpf.cli import main


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("attach", "dump", "detach"):
        assert command in result.output


def test_every_command_takes_the_instance_options() -> None:
    for command in ("attach", "dump", "detach"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        for option in ("--name", "--statedir", "--piddir"):
            assert option in result.output, (command, option)


def test_attach_requires_an_interface() -> None:
    result = CliRunner().invoke(main, ["attach"])
    assert result.exit_code == 2
    assert "--iface" in result.output


def test_os_errors_become_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["dump", "--piddir", str(blocker / "sub")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no ncebpf instance named 'ncebpf' is running")


def test_permission_denied_says_what_to_do() -> None:
    from ncebpf.cli import _describe_os_error

    message = _describe_os_error(PermissionError(13, "Permission denied", "/run/ncebpf/x.sock"))
    assert message == ("Permission denied: /run/ncebpf/x.sock "
                       "(run as root, or choose --statedir/--piddir you can write)")


def test_a_missing_privilege_is_not_blamed_on_a_directory() -> None:
    """Issue 9.8: promiscuous mode without CAP_NET_RAW said to choose another --statedir."""
    from ncebpf.cli import _describe_os_error

    message = _describe_os_error(PermissionError(1, "Operation not permitted"))
    assert "--statedir" not in message and "CAP_NET_RAW" in message



@pytest.mark.parametrize("value", ["nan", "inf", "1e300", "0"])
def test_timeouts_are_seconds_from_a_tenth_to_a_day(value: str) -> None:
    from click.testing import CliRunner

    from ncebpf.cli import main

    for command in ("stop", "dump"):
        result = CliRunner().invoke(main, [command, "--timeout", value, "--piddir", "/tmp"])
        assert result.exit_code == 2 and "--timeout" in result.output


@pytest.mark.parametrize(("command", "option"), [("stop", "--timeout"), ("top", "--interval")])
def test_seconds_that_are_no_number_are_told_so(command: str, option: str) -> None:
    from click.testing import CliRunner

    from ncebpf.cli import main

    result = CliRunner().invoke(main, [command, option, "0.5abc", "--piddir", "/tmp"])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': '0.5abc' is not a number of seconds" in result.output


@pytest.mark.parametrize("name", ["../esc", "", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_instance_names_cannot_leave_their_directories(name: str) -> None:
    from click.testing import CliRunner

    from ncebpf.cli import main

    result = CliRunner().invoke(main, ["status", "--name", name, "--piddir", "/tmp"])
    assert result.exit_code == 2 and "invalid instance name" in result.output
