"""The os-release cache: kept while nothing changes, dropped by every change a reader could see."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymachined.ops.os_release_cache import OsReleaseCache


def _write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A root with usr/lib/os-release and the usual etc/os-release link, and a process chrooted into it."""
    root = tmp_path / "root"
    for sub in ("etc", "usr/lib"):
        (root / sub).mkdir(parents=True)
    _write(root / "usr/lib/os-release", "ID=one\nVERSION_ID=1\n")
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    script = f"import os, time; os.chroot({str(root)!r}); time.sleep(1000)"
    process = subprocess.Popen(["unshare", "-r", sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{process.pid}/root") != str(root):
        assert time.monotonic() < deadline, "the process never entered its root"
        time.sleep(0.01)
    try:
        yield root, process.pid
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def cache() -> Iterator[OsReleaseCache]:
    c = OsReleaseCache()
    yield c
    c.close()


def test_kept_until_the_file_changes(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    root, pid = tree
    assert cache.lookup("m", pid) is None
    fields = cache.fill("m", pid)
    assert fields == {"ID": "one", "VERSION_ID": "1"}
    assert cache.lookup("m", pid) is fields  # served from memory
    assert cache.lookup("m", pid) is fields
    _write(root / "usr/lib/os-release", "ID=one\nVERSION_ID=2\n")  # rewritten in place
    assert cache.lookup("m", pid) is None
    assert cache.fill("m", pid)["VERSION_ID"] == "2"


def test_dropped_when_a_name_on_the_way_changes(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    root, pid = tree
    cache.fill("m", pid)
    # replaced by rename, as package managers do
    _write(root / "usr/lib/os-release.new", "ID=two\n")
    os.rename(root / "usr/lib/os-release.new", root / "usr/lib/os-release")
    assert cache.lookup("m", pid) is None
    assert cache.fill("m", pid) == {"ID": "two"}
    # the link in etc becomes a file of its own, which takes precedence
    (root / "etc/os-release").unlink()
    assert cache.lookup("m", pid) is None
    _write(root / "etc/os-release", "ID=three\n")
    assert cache.fill("m", pid) == {"ID": "three"}
    assert cache.lookup("m", pid) == {"ID": "three"}
    # the whole etc directory swapped
    os.rename(root / "etc", root / "etc.old")
    assert cache.lookup("m", pid) is None
    assert cache.fill("m", pid) == {"ID": "two"}  # falls back to usr/lib
    (root / "etc").mkdir()
    assert cache.lookup("m", pid) is None
    _write(root / "etc/os-release", "ID=four\n")
    assert cache.fill("m", pid) == {"ID": "four"}


def test_unrelated_changes_keep_it(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    root, pid = tree
    fields = cache.fill("m", pid)
    _write(root / "etc/hostname", "box\n")
    _write(root / "usr/lib/other", "x\n")
    (root / "tmp").mkdir()
    assert cache.lookup("m", pid) is fields


def test_a_link_elsewhere_is_read_every_time(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    root, pid = tree
    (root / "opt").mkdir()
    _write(root / "opt/os-release", "ID=elsewhere\n")
    (root / "etc/os-release").unlink()
    (root / "etc/os-release").symlink_to("../opt/os-release")
    assert cache.fill("m", pid) == {"ID": "elsewhere"}
    assert cache.lookup("m", pid) is None  # /opt is not watched: never cached
    _write(root / "opt/os-release", "ID=changed\n")
    assert cache.fill("m", pid) == {"ID": "changed"}


def test_missing_os_release(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    root, pid = tree
    (root / "etc/os-release").unlink()
    (root / "usr/lib/os-release").unlink()
    with pytest.raises(FileNotFoundError):
        cache.fill("m", pid)
    assert cache.lookup("m", pid) is None
    _write(root / "usr/lib/os-release", "ID=back\n")
    assert cache.fill("m", pid) == {"ID": "back"}


def test_machines_of_one_tree_share_an_entry(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    _root, pid = tree
    fields = cache.fill("a", pid)
    assert cache.lookup("b", pid) is fields
    cache.forget("a")
    assert cache.lookup("b", pid) is fields  # b still uses it
    cache.forget("b")
    assert cache.lookup("b", pid) is None


def test_a_gone_process_is_not_served(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    _root, pid = tree
    cache.fill("m", pid)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert cache.lookup("m", pid) is None
    with pytest.raises(OSError):
        cache.fill("m", pid)


def test_an_entry_left_behind_by_its_only_machine_goes(tree: tuple[Path, int], cache: OsReleaseCache) -> None:
    _root, pid = tree
    cache.fill("m", pid)
    cache.fill("m", os.getpid())  # the machine's leader is now another process, in another root
    assert cache.lookup("other", pid) is None  # nobody reads through the first root any more
    assert len(cache._entries) == 1
