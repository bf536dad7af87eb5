"""Copying between the host and a pivot_root'ed container, as CopyFromMachine/CopyToMachine do (B.9).

The expected names and texts are what systemd-machined 252 replied to the same requests.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from harness.rootfs import busybox_root
from harness.system import System
from pymachined.errors import MachineError, dbus_error
from pymachined.machine import Machine, MachineClass
from pymachined.ops.copy import copy_between, validate_copy_request

FILE_EXISTS = ("org.freedesktop.DBus.Error.FileExists", "File exists")
NOT_A_DIRECTORY = ("System.Error.ENOTDIR", "Not a directory")
NO_SUCH_FILE = ("org.freedesktop.DBus.Error.FileNotFound", "No such file or directory")


@pytest.fixture
def container(machined: System) -> tuple[Machine, Path]:
    root = busybox_root(machined.workdir / "root")
    leader = machined.container_leader("machine-c.scope", root)
    return Machine(name="c", machine_class=MachineClass.CONTAINER, leader=leader.pid), root


def copy_to(machine: Machine, source: str, destination: str = "", flags: int = 0, shift: int = 0) -> None:
    """CopyToMachine[WithFlags] as the bus adaptor runs it: validation, then the copy."""
    source, destination = validate_copy_request(machine, source, destination, flags)
    copy_between(machine, destination, source, True, bool(flags & 1), shift)


def copy_from(machine: Machine, source: str, destination: str = "", flags: int = 0, shift: int = 0) -> None:
    source, destination = validate_copy_request(machine, source, destination, flags)
    copy_between(machine, source, destination, False, bool(flags & 1), shift)


def error_of(function, *args: object, **kwargs: object) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(MachineError) as info:
        function(*args, **kwargs)
    return dbus_error(info.value)


def make_tree(path: Path) -> Path:
    """Every kind of entry 252 copies, with owners, modes, times and xattrs worth checking."""
    (path / "sub/deeper").mkdir(parents=True)
    (path / "f").write_text("file\n")
    os.chmod(path / "f", 0o4751)
    os.chown(path / "f", 1234, 1235)
    os.setxattr(path / "f", "user.x", b"value")
    os.setxattr(path / "f", "trusted.t", b"not copied")
    (path / "big").write_bytes(os.urandom(1 << 20))
    (path / "empty").write_bytes(b"")
    (path / "sub/deeper/g").write_text("g\n")
    os.link(path / "f", path / "sub/hl")
    (path / "evil").symlink_to("/etc/shadow")
    os.lchown(path / "evil", 1234, 1234)
    (path / "sub/rel").symlink_to("../f")
    (path / "dangling").symlink_to("nowhere")
    os.mkfifo(path / "fifo", 0o640)
    os.mknod(path / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path / "sock"))
    sock.close()
    os.setxattr(path / "sub", "user.d", b"dir value")
    os.chmod(path / "sub/deeper", 0o700)
    os.chown(path / "sub/deeper", 42, 43)
    os.utime(path / "f", ns=(1_000_000_000_000000001, 1_050_000_000_000000002))
    os.utime(path / "evil", ns=(1_000_000_000_000000001, 1_200_000_000_000000002), follow_symlinks=False)
    os.utime(path / "sub/deeper", ns=(1_000_000_000_000000001, 1_300_000_000_000000003))
    os.utime(path / "sub", ns=(1_000_000_000_000000001, 1_100_000_000_000000004))
    os.utime(path, ns=(1_000_000_000_000000001, 1_400_000_000_000000005))
    return path


def snapshot(top: Path) -> dict[str, object]:
    """What a copy must keep: type, mode, owner, mtime, contents or target, device, user xattrs, hardlink groups."""
    entries: dict[str, object] = {}
    inodes: dict[int, list[str]] = {}
    for current, dirs, files in os.walk(top):
        for name in ["", *dirs, *files] if current == str(top) else [*dirs, *files]:
            path = Path(current) / name
            relative = str(path.relative_to(top))
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                payload: object = hashlib.sha256(path.read_bytes()).hexdigest()
                inodes.setdefault(st.st_ino, []).append(relative)
            elif stat.S_ISLNK(st.st_mode):
                payload = os.readlink(path)
            else:
                payload = st.st_rdev if stat.S_ISCHR(st.st_mode) else None
            xattrs = {} if stat.S_ISLNK(st.st_mode) else {n: os.getxattr(path, n) for n in os.listxattr(path)}
            entries[relative] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                payload,
                xattrs,
            )
    entries["hardlinks"] = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return entries


def owners(top: Path) -> set[tuple[int, int]]:
    found = set()
    for current, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            st = os.lstat(Path(current) / name)
            found.add((st.st_uid, st.st_gid))
    st = os.lstat(top)
    return found | {(st.st_uid, st.st_gid)}


def test_round_trip_keeps_everything(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    source = make_tree(tmp_path / "tree")
    expected = snapshot(source)
    assert "trusted.t" in str(expected["f"])  # the source has it; copies must not
    copy_to(machine, str(source), "/data")
    inside = snapshot(root / "data")
    copy_from(machine, "/data", str(tmp_path / "back"))
    back = snapshot(tmp_path / "back")

    user_only = dict(expected)
    kind, mode, uid, gid, mtime, payload, _ = user_only["f"]  # type: ignore[misc]
    user_only["f"] = (kind, mode, uid, gid, mtime, payload, {"user.x": b"value"})
    user_only["sub/hl"] = user_only["f"]
    assert inside == user_only
    assert back == user_only
    assert inside["hardlinks"] == [["f", "sub/hl"]]
    assert inside["sub"][-1] == {"user.d": b"dir value"}  # type: ignore[index]
    assert stat.S_ISSOCK(os.lstat(root / "data/sock").st_mode)
    diff = subprocess.run(
        [
            "diff",
            "-r",
            "--no-dereference",
            "-x",
            "fifo",
            "-x",
            "null",
            "-x",
            "sock",
            str(source),
            str(tmp_path / "back"),
        ],
        capture_output=True,
        text=True,
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr


def test_symlink_to_etc_shadow_comes_out_as_a_symlink(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    (root / "data").mkdir()
    (root / "data/evil").symlink_to("/etc/shadow")
    copy_from(machine, "/data/evil", str(tmp_path / "evil"))
    copy_from(machine, "/data", str(tmp_path / "data"))
    for out in (tmp_path / "evil", tmp_path / "data/evil"):
        assert out.is_symlink()
        assert os.readlink(out) == "/etc/shadow"
    # the parent path may go through links inside the container; it stays inside its root
    (root / "up").symlink_to("../../../..")
    (root / "slash").symlink_to("/")
    copy_from(machine, "/up/../../slash/usr/lib/os-release", str(tmp_path / "os-release"))
    assert "ID=busyboxtest" in (tmp_path / "os-release").read_text()


def test_copy_to_never_writes_outside_the_root(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    marker = f"pymachined-copy-escape-{os.getpid()}"
    (tmp_path / marker).write_text("x\n")
    (root / "dest").symlink_to("/")
    (root / "up").symlink_to("../../../../..")
    # links in the parent path resolve within the container's root
    copy_to(machine, str(tmp_path / marker), f"/dest/etc/{marker}")
    copy_to(machine, str(tmp_path / marker), f"/up/../../tmp/{marker}")
    assert (root / "etc" / marker).read_text() == "x\n"
    assert (root / "tmp" / marker).read_text() == "x\n"
    assert not Path("/etc", marker).exists()
    assert not Path("/tmp", marker).exists()

    # the final component is never followed: a directory onto a link is ENOTDIR
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / marker).write_text("pwn\n")
    assert error_of(copy_to, machine, str(tree), "/dest") == NOT_A_DIRECTORY
    # …and so is a directory inside the tree meeting a link in the container
    (root / "tree").mkdir()
    (root / "tree/sub").symlink_to("/")
    assert error_of(copy_to, machine, str(tree), "/tree") == NOT_A_DIRECTORY
    assert not (root / marker).exists()
    assert not Path("/", marker).exists()

    # a file onto a link: FileExists; with replace the link itself is replaced
    (root / "tmp/esc").symlink_to(f"/etc/{marker}-target")
    assert error_of(copy_to, machine, str(tmp_path / marker), "/tmp/esc") == FILE_EXISTS
    copy_to(machine, str(tmp_path / marker), "/tmp/esc", flags=1)
    assert not (root / "tmp/esc").is_symlink()
    assert (root / "tmp/esc").read_text() == "x\n"
    assert not Path(f"/etc/{marker}-target").exists()
    assert not (root / "etc" / f"{marker}-target").exists()


def test_existing_leaf_and_replace(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    (tmp_path / "file").write_text("new\n")
    (root / "tmp/file").write_text("old\n")
    assert error_of(copy_to, machine, str(tmp_path / "file"), "/tmp/file") == FILE_EXISTS
    assert (root / "tmp/file").read_text() == "old\n"
    copy_to(machine, str(tmp_path / "file"), "/tmp/file", flags=1)
    assert (root / "tmp/file").read_text() == "new\n"
    # replace unlinks leaves only: a directory stays and the answer is FileExists
    assert error_of(copy_to, machine, str(tmp_path / "file"), "/tmp", flags=1) == FILE_EXISTS
    # a directory over a file is ENOTDIR, with or without replace
    (tmp_path / "d").mkdir()
    assert error_of(copy_to, machine, str(tmp_path / "d"), "/tmp/file") == NOT_A_DIRECTORY
    assert error_of(copy_to, machine, str(tmp_path / "d"), "/tmp/file", flags=1) == NOT_A_DIRECTORY
    # the same the other way round
    (tmp_path / "out").write_text("host\n")
    assert error_of(copy_from, machine, "/tmp/file", str(tmp_path / "out")) == FILE_EXISTS
    copy_from(machine, "/tmp/file", str(tmp_path / "out"), flags=1)
    assert (tmp_path / "out").read_text() == "new\n"


def test_merge_keeps_existing_entries_unless_replacing(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    tree = tmp_path / "tree"
    (tree / "sub/deeper").mkdir(parents=True)
    (tree / "f").write_text("file\n")
    (tree / "sub/deeper/g").write_text("g\n")
    os.link(tree / "f", tree / "sub/hl")
    copy_to(machine, str(tree), "/tree")
    (root / "tree/f").write_text("changed in the container\n")
    (root / "tree/sub/deeper/g").unlink()
    (root / "tree/extra").write_text("extra\n")
    os.chmod(root / "tree/sub", 0o711)

    copy_to(machine, str(tree), "/tree")
    assert (root / "tree/f").read_text() == "changed in the container\n"
    assert (root / "tree/sub/hl").read_text() == "changed in the container\n"
    assert (root / "tree/sub/deeper/g").read_text() == "g\n"
    assert (root / "tree/extra").read_text() == "extra\n"
    assert stat.S_IMODE(os.stat(root / "tree/sub").st_mode) == 0o711  # a merged directory keeps its own

    copy_to(machine, str(tree), "/tree", flags=1)
    assert (root / "tree/f").read_text() == "file\n"
    assert (root / "tree/extra").read_text() == "extra\n"
    # observed in 252: the twin is replaced too and linked to the new copy
    assert os.stat(root / "tree/f").st_ino == os.stat(root / "tree/sub/hl").st_ino
    assert os.stat(root / "tree/f").st_nlink == 2


def test_nested_conflicts_do_not_stop_the_walk(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    tree = tmp_path / "t2"
    (tree / "a").mkdir(parents=True)
    (tree / "a/x").write_text("x\n")
    (tree / "b").write_text("b\n")
    (tree / "c").write_text("c\n")
    (root / "t2/b").mkdir(parents=True)
    (root / "t2/a").write_text("file a\n")
    assert error_of(copy_to, machine, str(tree), "/t2") == NOT_A_DIRECTORY
    assert (root / "t2/a").read_text() == "file a\n"
    assert (root / "t2/b").is_dir()
    assert (root / "t2/c").read_text() == "c\n"
    assert error_of(copy_to, machine, str(tree), "/t2", flags=1) == NOT_A_DIRECTORY


def test_ownership_under_a_uid_shift(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    tree = make_tree(tmp_path / "tree")
    copy_to(machine, str(tree), "/shifted", shift=100000)
    assert owners(root / "shifted") == {(100000, 100000)}
    # without a shift numeric owners are kept
    copy_to(machine, str(tree), "/plain")
    assert owners(root / "plain") == owners(tree)

    for path in [root / "shifted", *(root / "shifted").rglob("*")]:
        os.lchown(path, 100005, 100006)
    copy_from(machine, "/shifted", str(tmp_path / "out"), shift=100000)
    assert owners(tmp_path / "out") == {(0, 0)}
    copy_from(machine, "/shifted", str(tmp_path / "kept"))
    assert owners(tmp_path / "kept") == {(100005, 100006)}


def test_validation_texts(container: tuple[Machine, Path]) -> None:
    machine, _ = container
    host = Machine(name=".host", machine_class=MachineClass.HOST, leader=1)
    assert error_of(copy_to, host, "/a", "/b") == (
        "org.freedesktop.DBus.Error.NotSupported",
        "Copying files is only supported on container machines.",
    )
    assert error_of(copy_to, machine, "/a", "/b", flags=2) == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Invalid argument",
    )
    assert error_of(copy_to, machine, "a", "/b") == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Source path must be absolute.",
    )
    assert error_of(copy_to, machine, "/a", "b") == (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Destination path must be absolute.",
    )


def test_paths_without_a_file_name(container: tuple[Machine, Path]) -> None:
    machine, _ = container
    bad_address = (
        "org.freedesktop.DBus.Error.BadAddress",
        "Failed to extract file name of '/' path: Cannot assign requested address",
    )
    dot_dot = (
        "org.freedesktop.DBus.Error.InvalidArgs",
        "Failed to extract file name of '/x/..' path: Invalid argument",
    )
    assert error_of(copy_to, machine, "/", "/b") == bad_address
    assert error_of(copy_from, machine, "/b", "/") == bad_address
    assert error_of(copy_to, machine, "/.", "/b") == (
        "org.freedesktop.DBus.Error.BadAddress",
        "Failed to extract file name of '/.' path: Cannot assign requested address",
    )
    # the host path is looked at first (observed in 252)
    assert error_of(copy_to, machine, "/x/..", "/") == dot_dot
    assert error_of(copy_to, machine, "/", "/x/..") == bad_address
    assert error_of(copy_from, machine, "/x/..", "/") == bad_address
    assert error_of(copy_from, machine, "/", "/x/..") == dot_dot
    # both names come before the host directory is opened
    assert error_of(copy_to, machine, "/nonexistent/x", "/") == bad_address


def test_missing_directories_and_sources(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    missing = tmp_path / "nonexistent/x"
    assert error_of(copy_to, machine, str(missing), "/b") == (
        "org.freedesktop.DBus.Error.FileNotFound",
        f"Failed to open host directory {missing}: No such file or directory",
    )
    (tmp_path / "file").write_text("f\n")
    assert error_of(copy_from, machine, "/b", str(tmp_path / "file/x")) == (
        "System.Error.ENOTDIR",
        f"Failed to open host directory {tmp_path}/file/x: Not a directory",
    )
    assert error_of(copy_to, machine, str(tmp_path / "nosource"), "/b") == NO_SUCH_FILE
    assert error_of(copy_to, machine, str(tmp_path / "file"), "/nonexistent/b") == NO_SUCH_FILE
    assert error_of(copy_to, machine, str(tmp_path / "file"), "/bin/busybox/b") == NOT_A_DIRECTORY
    assert error_of(copy_from, machine, "/nonexistent", str(tmp_path / "x")) == NO_SUCH_FILE
    # an empty destination is the source path, here missing inside the container
    assert error_of(copy_to, machine, str(tmp_path / "file"), "") == NO_SUCH_FILE
    # trailing slashes and "." components are skipped, as 252 does
    copy_to(machine, str(tmp_path / "file"), "/tmp/x/.")
    copy_to(machine, str(tmp_path / "file"), "/tmp//y//")
    assert (root / "tmp/x").read_text() == (root / "tmp/y").read_text() == "f\n"


def _chain(top: Path, levels: int) -> None:
    """`levels` nested directories, made through fds: the path is longer than PATH_MAX."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels - 1):
        os.mkdir("d", dir_fd=fd)
        next_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    os.close(fd)


def test_depth_limit(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, root = container
    try:
        _chain(tmp_path / "deep2048", 2048)
        copy_to(machine, str(tmp_path / "deep2048"), "/deep2048")
        _chain(tmp_path / "deep2049", 2049)
        assert error_of(copy_to, machine, str(tmp_path / "deep2049"), "/deep2049") == (
            "System.Error.ENAMETOOLONG",
            "File name too long",
        )
    finally:
        # deeper than shutil.rmtree (pytest's clean-up of old temporary directories) can recurse
        for tree in (tmp_path / "deep2048", tmp_path / "deep2049", root / "deep2048", root / "deep2049"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=False)


def test_leader_gone(container: tuple[Machine, Path], tmp_path: Path) -> None:
    machine, _ = container
    (tmp_path / "file").write_text("f\n")
    gone = Machine(name="gone", machine_class=MachineClass.CONTAINER, leader=2**22 + 1)
    assert error_of(copy_to, gone, str(tmp_path / "file"), "/file") == NO_SUCH_FILE
