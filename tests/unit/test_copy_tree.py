"""The pure parts of copying: file names as 252 extracts them, request validation, copying contents and trees."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pymachined.errors import MachineError, dbus_error
from pymachined.machine import Machine, MachineClass
from pymachined.ops.copy import (
    COPY_FLAGS_MASK,
    MACHINE_COPY_REPLACE,
    copy_file_data,
    copy_tree_at,
    split_file_name,
    validate_copy_request,
)

CONTAINER = Machine(name="c", machine_class=MachineClass.CONTAINER, leader=1)


@pytest.mark.parametrize(
    ("path", "parent", "name"),
    [
        ("/a", "/", "a"),
        ("/tmp/file", "/tmp/", "file"),
        ("/tmp/file/", "/tmp/", "file"),  # observed: 252 copies to /tmp/file
        ("/tmp//y//", "/tmp//", "y"),
        ("/tmp/./x", "/tmp/./", "x"),
        ("/tmp/x/.", "/tmp/", "x"),  # observed: a final "." is skipped, the name is x
        ("/a/../b", "/a/../", "b"),  # intermediate ".." is not checked
        ("/" + "n" * 255, "/", "n" * 255),
    ],
)
def test_file_name_as_252_extracts_it(path: str, parent: str, name: str) -> None:
    assert split_file_name(path) == (parent, name)


@pytest.mark.parametrize(
    ("path", "err"),
    [
        ("/", errno.EADDRNOTAVAIL),
        ("//", errno.EADDRNOTAVAIL),
        ("/.", errno.EADDRNOTAVAIL),
        ("/./.", errno.EADDRNOTAVAIL),
        ("/x/..", errno.EINVAL),
        ("/..", errno.EINVAL),
        ("/" + "n" * 256, errno.EINVAL),
        ("/" + "n" * 256 + "/x", errno.EINVAL),
        ("/" + "a/" * 2048, errno.EINVAL),
        ("", errno.EINVAL),
    ],
)
def test_paths_without_a_usable_file_name(path: str, err: int) -> None:
    with pytest.raises(OSError) as info:
        split_file_name(path)
    assert info.value.errno == err


def test_mask_is_replace_only() -> None:
    assert MACHINE_COPY_REPLACE == 1
    assert COPY_FLAGS_MASK == 1


def _error(machine: Machine, source: str, destination: str, flags: int = 0) -> tuple[str, str]:
    with pytest.raises(MachineError) as info:
        validate_copy_request(machine, source, destination, flags)
    return dbus_error(info.value)


def test_validation_order_and_texts() -> None:
    vm = Machine(name="v", machine_class=MachineClass.VM, leader=1)
    host = Machine(name=".host", machine_class=MachineClass.HOST, leader=1)
    not_container = (
        "org.freedesktop.DBus.Error.NotSupported",
        "Copying files is only supported on container machines.",
    )
    assert _error(host, "rel", "rel", 2) == not_container
    assert _error(vm, "/a", "/b") == not_container
    assert _error(CONTAINER, "rel", "rel", 2) == ("org.freedesktop.DBus.Error.InvalidArgs", "Invalid argument")
    assert _error(CONTAINER, "rel", "rel", 1) == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Source path must be absolute.",
    )
    assert _error(CONTAINER, "", "/b") == ("org.freedesktop.DBus.Error.InvalidArgs", "Source path must be absolute.")
    assert _error(CONTAINER, "/a", "b") == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Destination path must be absolute.",
    )


def test_validation_defaults_destination_to_source() -> None:
    assert validate_copy_request(CONTAINER, "/a/b", "", 0) == ("/a/b", "/a/b")
    assert validate_copy_request(CONTAINER, "/a/../b", "/c/.", 1) == ("/a/../b", "/c/.")


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 1024 * 1024 + 17])
def test_copy_file_data_copies_contents(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        copy_file_data(src.fileno(), dst.fileno())
        assert os.lseek(dst.fileno(), 0, os.SEEK_CUR) == size
    assert (tmp_path / "dst").read_bytes() == data


def test_copy_file_data_from_the_current_offset(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"skip-keep")
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        os.lseek(src.fileno(), 5, os.SEEK_SET)
        copy_file_data(src.fileno(), dst.fileno())
    assert (tmp_path / "dst").read_bytes() == b"keep"


def test_copy_file_data_from_a_pipe(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"through a pipe")
    os.close(write_end)
    with open(tmp_path / "dst", "wb") as dst:
        copy_file_data(read_end, dst.fileno())
    os.close(read_end)
    assert (tmp_path / "dst").read_bytes() == b"through a pipe"


def test_copy_file_data_from_procfs(tmp_path: Path) -> None:
    """copy_file_range() reads nothing from procfs; the fallback must still copy."""
    fd = os.open("/proc/self/status", os.O_RDONLY)
    with open(tmp_path / "dst", "wb") as dst:
        copy_file_data(fd, dst.fileno())
    os.close(fd)
    assert (tmp_path / "dst").read_text().startswith("Name:")


def _copy(source: Path, target: Path, replace: bool = False) -> int:
    sfd = os.open(source.parent, os.O_RDONLY | os.O_DIRECTORY)
    tfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return copy_tree_at(sfd, source.name, tfd, target.name, None, replace)
    finally:
        os.close(sfd)
        os.close(tfd)


def test_tree_copy_keeps_links_modes_and_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "f").write_text("f\n")
    os.chmod(src / "f", 0o640)
    os.link(src / "f", src / "d/twin")
    (src / "d/link").symlink_to("../f")
    os.utime(src / "d", ns=(1_000_000_000_000000001, 1_100_000_000_000000002))
    assert _copy(src, tmp_path / "dst") == 0
    dst = tmp_path / "dst"
    assert (dst / "f").read_text() == "f\n"
    assert (dst / "f").stat().st_mode & 0o7777 == 0o640
    assert (dst / "f").stat().st_ino == (dst / "d/twin").stat().st_ino
    assert os.readlink(dst / "d/link") == "../f"
    assert (dst / "d").stat().st_mtime_ns == 1_100_000_000_000000002


def test_tree_copy_merges_and_replaces(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_text("new\n")
    (src / "g").write_text("g\n")
    (dst / "f").write_text("old\n")
    (dst / "extra").write_text("extra\n")
    assert _copy(src, dst) == 0
    assert (dst / "f").read_text() == "old\n"
    assert (dst / "g").read_text() == "g\n"
    assert _copy(src, dst, replace=True) == 0
    assert (dst / "f").read_text() == "new\n"
    assert (dst / "extra").read_text() == "extra\n"


def test_top_level_leaf_conflicts(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("new\n")
    (tmp_path / "old").write_text("old\n")
    (tmp_path / "dir").mkdir()
    assert _copy(tmp_path / "file", tmp_path / "old") == errno.EEXIST
    assert _copy(tmp_path / "file", tmp_path / "old", replace=True) == 0
    assert (tmp_path / "old").read_text() == "new\n"
    # a directory cannot be unlinked as a leaf: the original EEXIST stays
    assert _copy(tmp_path / "file", tmp_path / "dir", replace=True) == errno.EEXIST
    assert _copy(tmp_path / "dir", tmp_path / "old") == errno.ENOTDIR
    assert _copy(tmp_path / "missing", tmp_path / "x") == errno.ENOENT
