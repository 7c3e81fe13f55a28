"""vagrant/Vagrantfile is valid for Vagrant and its libvirt provider (no box is booted here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VAGRANTFILE = ROOT / "vagrant" / "Vagrantfile"


def _validate(directory: Path, scratch: Path,
              **settings: str) -> subprocess.CompletedProcess[str]:
    """`vagrant validate` in `directory`, keeping Vagrant's state in `scratch`.

    VAGRANT_HOME and VAGRANT_DOTFILE_PATH keep ~/.vagrant.d and vagrant/.vagrant out of the
    user's home and the checkout; the vagrant-libvirt plugin is a system one (Debian's
    package), found whatever VAGRANT_HOME says.
    """
    if shutil.which("vagrant") is None:
        reason = "needs vagrant (scripts/install-system-deps --test)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    env = {name: value for name, value in os.environ.items() if not name.startswith("NCEBPF_")}
    env |= {"VAGRANT_HOME": str(scratch / "home"), "VAGRANT_DOTFILE_PATH": str(scratch / "dot"),
            "VAGRANT_CHECKPOINT_DISABLE": "1", **settings}
    return subprocess.run(["vagrant", "validate"], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_vagrantfile_validates(tmp_path: Path) -> None:
    result = _validate(VAGRANTFILE.parent, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_validation_reaches_the_libvirt_provider_block(tmp_path: Path) -> None:
    """A misspelt libvirt key fails: the plugin is there, so the real keys were checked too."""
    text = VAGRANTFILE.read_text()
    assert "libvirt.cpu_mode = " in text
    (tmp_path / "Vagrantfile").write_text(text.replace("libvirt.cpu_mode = ",
                                                       "libvirt.cpu_mood = "))
    result = _validate(tmp_path, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cpu_mood" in result.stdout + result.stderr


def _provisioning() -> str:
    """The shell script both machines are provisioned with (the Vagrantfile's heredoc)."""
    text = VAGRANTFILE.read_text()
    body = text.split("PROVISION = <<~SHELL\n", 1)[1].split("\nSHELL\n", 1)[0]
    return textwrap.dedent(body)


def test_both_machines_run_the_readme_make_test() -> None:
    text = VAGRANTFILE.read_text()
    assert _provisioning().splitlines()[-1] == "cd /ncebpf && CI=true make test"
    assert text.count('provision "test", type: "shell", inline: PROVISION') == 2
    for box in ("debian/bookworm64", "bento/ubuntu-24.04"):
        assert f'"{box}"' in text


def test_provisioning_installs_make_before_make_test(tmp_path: Path) -> None:
    """Debian's boxes have no make (priority optional): installed first, when missing."""
    script = _provisioning()
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[1] == "if ! command -v make >/dev/null; then"
    install = next(i for i, line in enumerate(lines) if "apt-get install" in line)
    assert lines[install].split()[-1] == "make"
    assert install < lines.index("cd /ncebpf && CI=true make test")
    (tmp_path / "provision.sh").write_text(script)
    syntax = subprocess.run(["bash", "-n", str(tmp_path / "provision.sh")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert syntax.returncode == 0, syntax.stderr


def _settings_seen(tmp_path: Path, **settings: str) -> str:
    """CPUS and MEMORY_MB as the Vagrantfile computes them from `settings`, reported by
    Vagrant itself: a copy of the Vagrantfile ends by raising its own error with them."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "Vagrantfile").write_text(
        VAGRANTFILE.read_text()
        + '\nraise NcebpfSettingError, "seen: #{CPUS} CPUs, #{MEMORY_MB} MiB"\n')
    result = _validate(probe, tmp_path, **settings)
    assert result.returncode == 1
    seen = [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("seen: ")]
    assert len(seen) == 1, result.stdout + result.stderr
    return seen[0]


@pytest.mark.parametrize(("settings", "seen"), [
    ({}, "seen: 2 CPUs, 4096 MiB"),
    ({"NCEBPF_VM_CPUS": "", "NCEBPF_VM_MEMORY": ""}, "seen: 2 CPUs, 4096 MiB"),
    ({"NCEBPF_VM_MEMORY": "4G"}, "seen: 2 CPUs, 4096 MiB"),
    ({"NCEBPF_VM_MEMORY": "6144M"}, "seen: 2 CPUs, 6144 MiB"),
    ({"NCEBPF_VM_MEMORY": "3072", "NCEBPF_VM_CPUS": "3"}, "seen: 3 CPUs, 3072 MiB"),
])
def test_settings_take_vm_tests_forms(tmp_path: Path, settings: dict[str, str],
                                      seen: str) -> None:
    assert _settings_seen(tmp_path, **settings) == seen


@pytest.mark.parametrize(("name", "value", "complaint"), [
    ("NCEBPF_VM_CPUS", "0", "NCEBPF_VM_CPUS is a number of CPUs (1, 2, ...), not '0'"),
    ("NCEBPF_VM_CPUS", "two", "NCEBPF_VM_CPUS is a number of CPUs (1, 2, ...), not 'two'"),
    ("NCEBPF_VM_MEMORY", "4GB",
     "NCEBPF_VM_MEMORY is MiB (4096) or a size with M or G (4096M, 4G), not '4GB'"),
    ("NCEBPF_VM_MEMORY", "4g",
     "NCEBPF_VM_MEMORY is MiB (4096) or a size with M or G (4096M, 4G), not '4g'"),
])
def test_a_bad_setting_fails_validation_in_one_line(tmp_path: Path, name: str, value: str,
                                                    complaint: str) -> None:
    result = _validate(VAGRANTFILE.parent, tmp_path, **{name: value})
    assert result.returncode == 1
    output = (result.stdout + result.stderr).splitlines()
    assert complaint in output
    assert not any("Traceback" in line or ".rb:" in line for line in output)


@pytest.mark.parametrize(("name", "value"), [
    ("NCEBPF_VM_CPUS", "0"), ("NCEBPF_VM_MEMORY", "4GB"), ("NCEBPF_VM_MEMORY", "4.5G")])
def test_vm_test_refuses_it_in_the_same_words(tmp_path: Path, name: str, value: str) -> None:
    """One format for both (README, "Other kernels"). vm-test refuses before installing
    anything; its cache is a regular file, so a run let through could not go on to a VM."""
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("")
    env = {n: v for n, v in os.environ.items() if not n.startswith("NCEBPF_")}
    env |= {"NCEBPF_VM_CACHE": str(cache), "TMPDIR": str(tmp_path), name: value}
    vm_test = subprocess.run([str(ROOT / "scripts" / "vm-test"), "6.1"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert vm_test.returncode == 2
    complaint = vm_test.stderr.removeprefix("vm-test: ").rstrip("\n")
    assert complaint.startswith(f"{name} is ")
    vagrant = _validate(VAGRANTFILE.parent, tmp_path, **{name: value})
    assert vagrant.returncode == 1
    assert complaint in (vagrant.stdout + vagrant.stderr).splitlines()
