"""os-release of a machine, read inside its root without following links out of it."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import MachineError, failed, from_errno, not_supported
from ..libc import errno_error
from ..libc import libc as _libc
from ..machine import Machine, MachineClass
from ..state import parse_env

if TYPE_CHECKING:
    from .os_release_cache import OsReleaseCache

OS_RELEASE_PATHS: Final = ("etc/os-release", "usr/lib/os-release")
NO_OS_RELEASE: Final = "Machine does not contain OS release information"
OS_RELEASE_MAX: Final = 1 << 20

_SYS_OPENAT2: Final = 437
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_IN_ROOT: Final = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(
    root_fd: int,
    path: str,
    flags: int = os.O_RDONLY | os.O_CLOEXEC,
    resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
) -> int:
    """openat2() with RESOLVE_IN_ROOT: `..` and symlinks stay inside `root_fd`."""
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        raise errno_error(path)
    return int(fd)


def read_os_release_in_root(root: str | Path) -> dict[str, str]:
    """os-release pairs of the tree at `root`; FileNotFoundError if it has none."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for relative in OS_RELEASE_PATHS:
            try:
                fd = open_in_root(root_fd, relative)
            except FileNotFoundError:
                continue
            return read_os_release_fd(fd)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    finally:
        os.close(root_fd)


def read_os_release_fd(fd: int) -> dict[str, str]:
    """The pairs of an opened os-release file (at most its first MiB); the fd is closed."""
    with os.fdopen(fd, "rb") as f:
        return parse_env(f.read(OS_RELEASE_MAX).decode("utf-8", "replace"))


def os_release_pid(machine: Machine) -> int:
    """The process whose root holds the os-release GetOSRelease answers with (NotSupported for VMs)."""
    if machine.machine_class is MachineClass.HOST:
        return os.getpid()
    if machine.machine_class is MachineClass.CONTAINER:
        return machine.leader
    raise not_supported("Requesting OS release data is only supported on container machines.")


def cached_os_release(machine: Machine, cache: OsReleaseCache) -> dict[str, str] | None:
    """GetOSRelease from the cache without touching the machine's file system, or None."""
    return cache.lookup(machine.name, os_release_pid(machine))


def machine_os_release(machine: Machine, cache: OsReleaseCache) -> dict[str, str]:
    """GetOSRelease: the host's, or the one a container's leader sees (blocking: a worker thread's job)."""
    pid = os_release_pid(machine)
    try:
        fields = cache.lookup(machine.name, pid)
        return fields if fields is not None else cache.fill(machine.name, pid)
    except FileNotFoundError:
        if machine.machine_class is MachineClass.HOST:
            raise from_errno(errno.ENOENT) from None
        raise failed(NO_OS_RELEASE) from None
    except MachineError:
        raise
    except OSError:
        raise failed("Child died abnormally.") from None
