"""vagrant/Vagrantfile is valid for Vagrant and its libvirt provider (no box is booted here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VAGRANTFILE = ROOT / "vagrant" / "Vagrantfile"


def _validate(directory: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
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
    env = {**os.environ, "VAGRANT_HOME": str(scratch / "home"),
           "VAGRANT_DOTFILE_PATH": str(scratch / "dot"), "VAGRANT_CHECKPOINT_DISABLE": "1"}
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


def test_both_machines_run_the_readme_make_test() -> None:
    text = VAGRANTFILE.read_text()
    assert 'MAKE_TEST = "cd /ncebpf && CI=true make test"' in text
    assert text.count('inline: MAKE_TEST') == 2
    for box in ("debian/bookworm64", "bento/ubuntu-24.04"):
        assert f'"{box}"' in text
