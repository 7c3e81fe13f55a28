from __future__ import annotations

from pathlib import Path

from ncebpf.kernel.headers import stub_tree, version_code


def test_version_code() -> None:
    assert version_code("6.18.44-fc-v595") == (6 << 16) + (18 << 8) + 44
    assert version_code("5.15.0-91-generic") == (5 << 16) + (15 << 8)
    assert version_code("4.9.300") == (4 << 16) + (9 << 8) + 255


def test_stub_tree_is_complete_and_built_once(tmp_path: Path) -> None:
    tree = stub_tree(tmp_path, release="6.18.1-test", machine="x86_64")
    for relative in ["include/linux/kconfig.h", "include/linux/types.h",
                     "include/linux/version.h", "include/uapi/linux/if_ether.h",
                     "include/uapi/asm-generic", "arch/x86/include/uapi/asm/types.h",
                     "arch/x86/include/asm/page.h", "include/sys/socket.h"]:
        assert (tree / relative).exists(), relative
    assert (tree / "include/uapi/linux/bpf.h").read_text().startswith("/* BCC provides")
    assert "LINUX_VERSION_CODE 397825" in (tree / "include/linux/version.h").read_text()
    mtime = (tree / "include/linux/kconfig.h").stat().st_mtime_ns
    assert stub_tree(tmp_path, release="6.18.1-test", machine="x86_64") == tree
    assert (tree / "include/linux/kconfig.h").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["kstub-6.18.1-test"]
