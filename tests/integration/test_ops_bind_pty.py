"""PTYs and bind mounts inside containers, and the namespace helper both use, called directly.

The isolated System serves only to make leaders (a busybox root pivoted into, with its own /proc
and devpts), so no daemon is started; the operations are called as the adaptors call them, from
worker threads.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from harness.rootfs import CONTAINER_INIT, busybox_root
from harness.system import PYMACHINED, Leader, System, system, wait_for
from pymachined.errors import MachineError, dbus_error
from pymachined.machine import Machine, MachineClass
from pymachined.ops.bind import bind_mount, check_bind_uid_shift, validate_bind_request
from pymachined.ops.nsexec import HelperError, HelperFailed, run_in_namespaces
from pymachined.ops.pty import open_pty

T = TypeVar("T")

NOT_SUPPORTED = "org.freedesktop.DBus.Error.NotSupported"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
FILE_NOT_FOUND = "org.freedesktop.DBus.Error.FileNotFound"
BAD_SOURCE = "Source path must be absolute and normalized."
BAD_DESTINATION = "Destination path must be absolute and normalized."
ONLY_CONTAINERS = "Bind mounting is only supported on container machines."


@pytest.fixture
def machined(tmp_path: Path) -> Iterator[System]:
    """The isolated system without a daemon: only its leaders are used."""
    with system(PYMACHINED, tmp_path, start=False) as sys_:
        yield sys_


def in_worker(func: Callable[[], T]) -> T:
    """As the adaptors call the blocking operations: from a worker thread while other threads exist."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return pool.submit(func).result(timeout=30)


def error_of(func: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(MachineError) as info:
        in_worker(func)
    return dbus_error(info.value)


def container(s: System, name: str = "ct") -> tuple[Machine, Leader, Path]:
    root = busybox_root(s.workdir / f"root-{name}")
    leader = s.container_leader(f"machine-{name}.scope", root)
    return Machine(name=name, machine_class=MachineClass.CONTAINER, leader=leader.pid), leader, root


def inside(leader: Leader, script: str) -> subprocess.CompletedProcess[str]:
    """A shell in the container's mount namespace (whose root is the container's)."""
    return subprocess.run(
        ["nsenter", "-t", str(leader.pid), "-m", "/bin/busybox", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )


def read_master(master: int, want: bytes, timeout: float = 10) -> bytes:
    data = b""
    while want not in data:
        ready, _, _ = select.select([master], [], [], timeout)
        assert ready, f"nothing more on the master after {data!r}"
        data += os.read(master, 1024)
    return data


# OpenPTY


def test_pty_in_container_comes_from_its_devpts(machined: System) -> None:
    machine, leader, _ = container(machined)
    master, path = in_worker(lambda: open_pty(machine))
    try:
        assert path == "/dev/pts/0"
        assert os.get_inheritable(master) is False
        # the slave exists in the container's devpts, not as the host's /dev/pts/0 …
        assert os.path.exists(f"/proc/{leader.pid}/root/dev/pts/0")
        # … and a process inside reaches us through it
        result = inside(leader, "echo hello > /dev/pts/0")
        assert result.returncode == 0, result.stderr
        assert b"hello" in read_master(master, b"hello")
        second, second_path = in_worker(lambda: open_pty(machine))
        os.close(second)
        assert second_path == "/dev/pts/1"
    finally:
        os.close(master)


def test_pty_on_the_host(machined: System) -> None:
    host = Machine(name=".host", machine_class=MachineClass.HOST, leader=1)
    master, path = in_worker(lambda: open_pty(host))
    try:
        assert path.startswith("/dev/pts/") and path[len("/dev/pts/") :].isdigit()
        slave = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(slave, b"from the host\n")
        finally:
            os.close(slave)
        assert b"from the host" in read_master(master, b"from the host")
    finally:
        os.close(master)


def test_pty_in_a_user_namespace(machined: System) -> None:
    """The helper also joins the leader's user namespace (its own mount namespace is the host's here)."""
    leader = machined.userns_leader("machine-userns.scope", "0 100000 65536")
    machine = Machine(name="userns", machine_class=MachineClass.CONTAINER, leader=leader.pid)
    master, path = in_worker(lambda: open_pty(machine))
    try:
        assert path.startswith("/dev/pts/")
        # allocated by root of that user namespace: the slave belongs to its UID 0, 100000 outside
        assert os.stat(path).st_uid == 100000
    finally:
        os.close(master)


def test_pty_errors(machined: System) -> None:
    vm = Machine(name="vm", machine_class=MachineClass.VM, leader=os.getpid())
    assert error_of(lambda: open_pty(vm)) == (NOT_SUPPORTED, "Operation not supported")
    no_leader = Machine(name="gone", machine_class=MachineClass.CONTAINER, leader=0)
    assert error_of(lambda: open_pty(no_leader)) == (INVALID_ARGS, "Invalid argument")


# BindMount: validation


@pytest.mark.parametrize("bad", ["tmp/x", "/tmp//x", "/tmp/./x", "/tmp/../x", "/tmp/.", "/..", "", "/" + "a" * 256])
def test_bind_paths_must_be_absolute_and_normalized(bad: str) -> None:
    ct = Machine(name="ct", machine_class=MachineClass.CONTAINER, leader=1)
    with pytest.raises(MachineError) as info:
        validate_bind_request(ct, bad, "/mnt")
    assert dbus_error(info.value) == (INVALID_ARGS, BAD_SOURCE)
    if bad:
        with pytest.raises(MachineError) as info:
            validate_bind_request(ct, "/srv", bad)
        assert dbus_error(info.value) == (INVALID_ARGS, BAD_DESTINATION)


def test_bind_validation_order_and_defaults() -> None:
    ct = Machine(name="ct", machine_class=MachineClass.CONTAINER, leader=1)
    assert validate_bind_request(ct, "/srv/data", "") == ("/srv/data", "/srv/data")
    assert validate_bind_request(ct, "/srv/data/", "/mnt/x") == ("/srv/data/", "/mnt/x")
    assert validate_bind_request(ct, "/", "/" + "a" * 255) == ("/", "/" + "a" * 255)
    # source before destination
    with pytest.raises(MachineError) as info:
        validate_bind_request(ct, "rel", "also/rel")
    assert info.value.message == BAD_SOURCE
    # the class before any argument
    for machine_class in (MachineClass.VM, MachineClass.HOST):
        other = Machine(name="other", machine_class=machine_class, leader=1)
        with pytest.raises(MachineError) as info:
            validate_bind_request(other, "rel", "rel")
        assert dbus_error(info.value) == (NOT_SUPPORTED, ONLY_CONTAINERS)


def test_bind_refused_with_a_uid_shift(machined: System) -> None:
    shifted = machined.userns_leader("machine-shifted.scope", "0 100000 65536")
    machine = Machine(name="shifted", machine_class=MachineClass.CONTAINER, leader=shifted.pid)
    assert error_of(lambda: check_bind_uid_shift(machine)) == (
        NOT_SUPPORTED,
        "Can't bind mount on container with user namespacing applied.",
    )
    complex_ = machined.userns_leader("machine-complex.scope", "0 200000 1000")
    machine = Machine(name="complex", machine_class=MachineClass.CONTAINER, leader=complex_.pid)
    assert error_of(lambda: check_bind_uid_shift(machine)) == ("System.Error.ENXIO", "No such device or address")
    plain, _, _ = container(machined)
    check_bind_uid_shift(plain)


# BindMount: mounting


def test_bind_directory_read_only_with_mkdir(machined: System) -> None:
    machine, leader, _ = container(machined)
    share = machined.workdir / "share"
    share.mkdir()
    (share / "data").write_text("from the host\n")
    in_worker(lambda: bind_mount(machine, str(share), "/mnt/share/sub", read_only=True, mkdir=True))
    inner = Path(f"/proc/{leader.pid}/root/mnt/share/sub")
    assert (inner / "data").read_text() == "from the host\n"
    umask = os.umask(0)
    os.umask(umask)
    assert Path(f"/proc/{leader.pid}/root/mnt/share").stat().st_mode & 0o7777 == 0o755 & ~umask
    result = inside(leader, "echo no > /mnt/share/sub/new")
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    assert not (share / "new").exists()
    # a mount of the container only: nothing changed on the host's side
    assert not os.path.ismount(share) and not Path("/mnt/share").exists()
    assert "/mnt/share/sub" in inside(leader, "cat /proc/self/mountinfo").stdout


def test_bind_single_file_writable(machined: System) -> None:
    machine, leader, _ = container(machined)
    hostfile = machined.workdir / "hostfile"
    hostfile.write_text("one\n")
    in_worker(lambda: bind_mount(machine, str(hostfile), "/etc/fromhost", read_only=False, mkdir=True))
    result = inside(leader, "cat /etc/fromhost && echo two > /etc/fromhost")
    assert result.returncode == 0 and result.stdout == "one\n", result.stderr
    assert hostfile.read_text() == "two\n"
    # an existing file as the mount point needs no mkdir
    (machined.workdir / "other").write_text("other\n")
    in_worker(lambda: bind_mount(machine, str(machined.workdir / "other"), "/etc/machine-id", False, False))
    assert inside(leader, "cat /etc/machine-id").stdout == "other\n"


def test_bind_follows_symlinks_of_the_source(machined: System) -> None:
    machine, leader, _ = container(machined)
    target = machined.workdir / "target"
    target.mkdir()
    (target / "marker").write_text("followed\n")
    link = machined.workdir / "link"
    link.symlink_to(target)
    in_worker(lambda: bind_mount(machine, str(link), "/srv", read_only=False, mkdir=True))
    assert inside(leader, "cat /srv/marker").stdout == "followed\n"


def test_bind_errors(machined: System) -> None:
    machine, leader, root = container(machined)
    share = machined.workdir / "share"
    share.mkdir()

    def text(src: str, dest: str, reason: str) -> str:
        return f"Failed to mount {src} on {dest} in machine's namespace: {reason}"

    # destination missing and no mkdir
    assert error_of(lambda: bind_mount(machine, str(share), "/nonexistent/x", False, False)) == (
        FILE_NOT_FOUND,
        text(str(share), "/nonexistent/x", "No such file or directory"),
    )
    assert not (root / "nonexistent").exists()
    # source missing
    assert error_of(lambda: bind_mount(machine, "/nonexist", "/y", False, True)) == (
        FILE_NOT_FOUND,
        text("/nonexist", "/y", "No such file or directory"),
    )
    # a leader without a mount namespace of its own
    flat = machined.spawn_leader("machine-flat.scope")
    same = Machine(name="flat", machine_class=MachineClass.CONTAINER, leader=flat.pid)
    assert error_of(lambda: bind_mount(same, str(share), "/mnt", False, True)) == (
        INVALID_ARGS,
        text(str(share), "/mnt", "Invalid argument"),
    )
    # the leader is gone
    leader.kill()
    assert error_of(lambda: bind_mount(machine, str(share), "/mnt", False, True))[1].startswith(
        text(str(share), "/mnt", "")
    )


# the namespace helper itself


def pid_namespace_container(s: System) -> tuple[int, Path]:
    """A container in a PID namespace of its own; returns its leader (not the unshare process)."""
    root = busybox_root(s.workdir / "root-pidns")
    outer = s.spawn_in(
        "machine-pidns.scope", ["unshare", "--mount", "--pid", "--fork", "sh", "-c", CONTAINER_INIT, "sh", str(root)]
    )

    def leader() -> int:
        try:
            children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(children[0]) if children else 0

    wait_for(lambda: (root / "run/ready").exists() and leader() > 0, "the PID namespace container")
    wait_for(lambda: Path(f"/proc/{leader()}/comm").read_text().strip() == "sleep", "its leader to become sleep")
    return leader(), root


def test_helper_is_a_member_of_the_pid_namespace(machined: System) -> None:
    pid, _ = pid_namespace_container(machined)

    def own_pid() -> tuple[bytes, list[int]]:
        # the container's /proc: /proc/self exists only for members of its PID namespace
        return os.readlink("/proc/self").encode(), []

    data, fds = in_worker(lambda: run_in_namespaces(pid, own_pid))
    assert fds == [] and 1 < int(data) < 100
    machine = Machine(name="pidns", machine_class=MachineClass.CONTAINER, leader=pid)
    master, path = in_worker(lambda: open_pty(machine))
    os.close(master)
    assert path == "/dev/pts/0"
    share = machined.workdir / "pidns-share"
    share.mkdir()
    (share / "f").write_text("pidns\n")
    in_worker(lambda: bind_mount(machine, str(share), "/mnt/in", read_only=True, mkdir=True))
    assert Path(f"/proc/{pid}/root/mnt/in/f").read_text() == "pidns\n"


def test_helper_results_and_failures(machined: System) -> None:
    _, leader, _ = container(machined)

    def files() -> tuple[bytes, list[int]]:
        fd = os.open("/etc/os-release", os.O_RDONLY | os.O_CLOEXEC)
        return b"payload", [fd, fd]

    data, fds = in_worker(lambda: run_in_namespaces(leader.pid, files))
    try:
        assert data == b"payload" and len(fds) == 2 and len(set(fds)) == 2
        assert os.read(fds[0], 100).startswith(b"ID=busyboxtest")
    finally:
        for fd in fds:
            os.close(fd)

    def refuse() -> tuple[bytes, list[int]]:
        raise PermissionError(errno.EPERM, "no")

    with pytest.raises(HelperError) as refused:
        in_worker(lambda: run_in_namespaces(leader.pid, refuse))
    assert refused.value.errno == errno.EPERM

    def die() -> tuple[bytes, list[int]]:
        os.kill(os.getpid(), signal.SIGKILL)
        return b"", []

    with pytest.raises(HelperFailed, match="signal 9"):
        in_worker(lambda: run_in_namespaces(leader.pid, die))

    def broken() -> tuple[bytes, list[int]]:
        raise RuntimeError("not an OSError")

    with pytest.raises(HelperFailed, match="status 2"):
        in_worker(lambda: run_in_namespaces(leader.pid, broken))
    # the leader's pidfd is checked after its namespaces were opened
    pidfd = os.pidfd_open(os.getpid())
    try:
        with pytest.raises(ProcessLookupError):
            in_worker(lambda: run_in_namespaces(leader.pid, files, pidfd=pidfd))
    finally:
        os.close(pidfd)
    assert forked_copies() == []


def forked_copies() -> list[int]:
    """Children of this process that are still copies of it (helpers not reaped)."""
    ours = Path("/proc/self/cmdline").read_bytes()
    copies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            ppid = int(status.split("PPid:")[1].split()[0])
            if ppid == os.getpid() and (entry / "cmdline").read_bytes() == ours:
                copies.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return copies


async def test_helper_leaves_the_event_loop_alone(machined: System) -> None:
    """As in the daemon: an asyncio loop with signal handlers, the helper forked from a worker thread.

    The helper resets dispositions and drops the loop's wake-up fd, so a signal it gets acts as
    default (here: kills it) and never reaches the daemon's handlers.
    """
    _, leader, _ = container(machined)
    loop = asyncio.get_running_loop()
    received: list[int] = []
    loop.add_signal_handler(signal.SIGUSR1, received.append, signal.SIGUSR1)
    try:

        def signalled() -> tuple[bytes, list[int]]:
            os.kill(os.getpid(), signal.SIGUSR1)
            return b"survived", []

        with pytest.raises(HelperFailed, match=f"signal {int(signal.SIGUSR1)}"):
            await asyncio.to_thread(run_in_namespaces, leader.pid, signalled)
        await asyncio.sleep(0.1)
        assert received == []
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
