from __future__ import annotations

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
