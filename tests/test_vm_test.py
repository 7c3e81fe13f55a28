"""scripts/vm-test's arguments and settings, and how the VM is stopped (no VM is booted here).

Every vm-test run below is refused before anything is installed. As a guard against a
regression that would let one through, NCEBPF_VM_CACHE is a regular file: virtme-ng's venv
cannot be made in it, so such a run stops at `python3 -m venv` instead of booting a VM.
The part that stops the VM, scripts/run-with-timeout, is run directly with `sleep`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VM_TEST = ROOT / "scripts" / "vm-test"
RUN_WITH_TIMEOUT = ROOT / "scripts" / "run-with-timeout"
CI_RUN = ROOT / ".ci" / "run"


def _vm_test(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("")
    run_dirs = tmp_path / "tmp"
    run_dirs.mkdir()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("NCEBPF_VM_") and name != "VM_TESTS"}
    env |= {"NCEBPF_VM_CACHE": str(cache), "TMPDIR": str(run_dirs), **settings}
    result = subprocess.run([str(VM_TEST), *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    # Nothing installed (virtme-ng goes into the cache), nothing copied (the run directory
    # goes under TMPDIR).
    assert cache.read_text() == "" and cache.is_file()
    assert list(run_dirs.iterdir()) == []
    return result


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_printed_before_anything_is_installed(tmp_path: Path, flag: str) -> None:
    result = _vm_test(tmp_path, flag)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: scripts/vm-test KERNEL")
    for documented in ("NCEBPF_VM_CPUS", "NCEBPF_VM_MEMORY", "4096M", "NCEBPF_VM_TIMEOUT",
                       "NCEBPF_VM_ACCEL", "VM_TESTS", "Exit status", "124", "130"):
        assert documented in result.stdout


@pytest.mark.parametrize(("args", "complaint"), [
    ((), "vm-test: no KERNEL given"),
    (("bogus",), "vm-test: 'bogus' is not a KERNEL: give MAJOR.MINOR (6.1)"),
    (("6",), "vm-test: '6' is not a KERNEL"),
    (("6.1x",), "vm-test: '6.1x' is not a KERNEL"),
    (("6.1", "6.12"), "vm-test: one KERNEL only, got 2: 6.1 6.12"),
])
def test_a_bad_argument_is_named_with_the_usage(tmp_path: Path, args: tuple[str, ...],
                                                complaint: str) -> None:
    result = _vm_test(tmp_path, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    first, usage = result.stderr.splitlines()
    assert first.startswith(complaint), first
    assert usage.startswith("usage: scripts/vm-test KERNEL") and "--help" in usage


@pytest.mark.parametrize(("name", "value", "complaint"), [
    ("NCEBPF_VM_CPUS", "0", "a number of CPUs"),
    ("NCEBPF_VM_CPUS", "two", "a number of CPUs"),
    ("NCEBPF_VM_MEMORY", "4GB", "MiB (4096) or a size with M or G (4096M, 4G)"),
    ("NCEBPF_VM_MEMORY", "4g", "MiB (4096) or a size with M or G"),
    ("NCEBPF_VM_MEMORY", "0", "MiB (4096) or a size with M or G"),
    ("NCEBPF_VM_TIMEOUT", "90m", "a number of seconds"),
    ("NCEBPF_VM_TIMEOUT", "-1", "a number of seconds"),
    ("NCEBPF_VM_ACCEL", "hvf", "kvm or tcg"),
])
def test_a_bad_setting_is_refused_in_one_line_before_any_copy(
        tmp_path: Path, name: str, value: str, complaint: str) -> None:
    result = _vm_test(tmp_path, "6.1", **{name: value})
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert line.startswith(f"vm-test: {name} is ") and complaint in line
    assert line.endswith(f"not '{value}'")


def _pid_from(pid_file: Path) -> int:
    """The pid the command under run-with-timeout wrote, once it is running."""
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    return int(pid_file.read_text())


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _start_bounded(tmp_path: Path, seconds: int) -> tuple[subprocess.Popen[str], int]:
    """run-with-timeout running `sleep 600` (as the shell's own pid), in a session of its own."""
    pid_file = tmp_path / "command.pid"
    runner = subprocess.Popen(
        [str(RUN_WITH_TIMEOUT), str(seconds), str(tmp_path / "output"),
         "sh", "-c", f"echo started; echo $$ >{pid_file}; exec sleep 600"],
        env={**os.environ, "TMPDIR": str(tmp_path)}, start_new_session=True, text=True)
    return runner, _pid_from(pid_file)


@pytest.mark.parametrize(("how", "status"), [("term", 143), ("ctrl-c", 130)])
def test_stopping_run_with_timeout_stops_what_it_started(tmp_path: Path, how: str,
                                                         status: int) -> None:
    """A kill of the runner, or Ctrl-C (INT to the runner's group, not to timeout's own
    group), ends the command too, and the runner returns only once it is gone."""
    runner, command = _start_bounded(tmp_path, 600)
    try:
        assert _alive(command)
        # The command is in timeout's process group, not the runner's: what Ctrl-C misses.
        assert os.getpgid(command) != os.getpgid(runner.pid)
        if how == "term":
            runner.send_signal(signal.SIGTERM)
        else:
            os.killpg(runner.pid, signal.SIGINT)
        assert runner.wait(timeout=60) == status
        assert not _alive(command)
        assert (tmp_path / "output").read_text() == "started\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["command.pid", "output"]
    finally:
        if runner.poll() is None:
            runner.kill()
        if _alive(command):
            os.kill(command, signal.SIGKILL)


def test_run_with_timeout_stops_the_command_when_the_time_is_up(tmp_path: Path) -> None:
    runner, command = _start_bounded(tmp_path, 1)
    try:
        assert runner.wait(timeout=60) == 124
        assert not _alive(command)
        assert (tmp_path / "output").read_text() == "started\n"
    finally:
        if runner.poll() is None:
            runner.kill()
        if _alive(command):
            os.kill(command, signal.SIGKILL)


def test_run_with_timeout_passes_on_the_status_and_output(tmp_path: Path) -> None:
    output = tmp_path / "output"
    result = subprocess.run([str(RUN_WITH_TIMEOUT), "60", str(output), "sh", "-c",
                             "echo out; echo err >&2; exit 7"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 7
    assert output.read_text() == "out\nerr\n"
    assert result.stdout == result.stderr == ""


@pytest.mark.parametrize("args", [(), ("60", "out"), ("0", "out", "true"),
                                  ("soon", "out", "true")])
def test_run_with_timeout_usage(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = subprocess.run([str(RUN_WITH_TIMEOUT), *args], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_ci_vm_leg_ends_in_time_for_its_summary() -> None:
    """CI has 45 min (.ci/run's budget): the host's `make test` takes ~27, the VM leg ~15
    with its boot. Without its own timeout a hung guest would take
    vm-test's default 90 min, all of CI's time, and CI would end with no summary."""
    text = CI_RUN.read_text()
    assert "NCEBPF_VM_TIMEOUT=$VM_LEG_TIMEOUT" in text
    match = re.search(r"^VM_LEG_TIMEOUT=(\d+)$", text, re.M)
    assert match, "no VM_LEG_TIMEOUT in .ci/run"
    leg = int(match.group(1))
    assert 16 * 60 < leg <= (45 - 27) * 60


def test_ci_vm_tests_run_as_one_pytest_command(tmp_path: Path) -> None:
    """.ci/run's VM_TESTS spans lines; the guest once ran each line as a command of its own
    (CI failed with 'tests/test_kernel_peer_rule.py: Permission denied'). The guest script is
    written by vm-test's own function, and its command run with a pytest that prints its
    arguments."""
    match = re.search(r'^VM_KERNEL_TESTS="([^"]*)"', CI_RUN.read_text(), re.M)
    assert match, "no VM_KERNEL_TESTS in .ci/run"
    vm_tests = match.group(1)
    assert "\n" in vm_tests  # the case that failed
    env = {name: value for name, value in os.environ.items() if not name.startswith("NCEBPF_")}
    subprocess.run(["bash", "-c", f'source "{VM_TEST}"; run_dir="$1"; write_guest_script',
                    "bash", str(tmp_path)],
                   env=env | {"VM_TESTS": vm_tests}, check=True, timeout=30)
    command = next(line for line in (tmp_path / "guest.sh").read_text().splitlines()
                   if line.startswith("command="))
    pytest_bin = tmp_path / ".venv" / "bin" / "pytest"
    pytest_bin.parent.mkdir(parents=True)
    pytest_bin.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    pytest_bin.chmod(0o755)
    ran = subprocess.run(["bash", "-c", f'{command}\neval "$command"'], cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=30)
    assert ran.stderr == ""
    assert ran.stdout.split("\n")[:-1] == vm_tests.split()
    for word in vm_tests.split():
        assert word.startswith("-") or word == "privileged" or \
            (ROOT / word.split("::")[0]).is_file(), word
