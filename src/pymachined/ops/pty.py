"""Pseudo-terminals in machines (OpenPTY): the master fd and the slave's path as the machine sees it.

A container's PTY comes from its own devpts instance: a helper joins the leader's namespaces,
chroots into its root and opens /dev/ptmx there (252's openpt_allocate_in_namespace). The slave's
name is computed from the master with TIOCGPTN, so it is the path inside the container.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from typing import Final

from ..errors import from_errno
from ..machine import Machine, MachineClass
from .nsexec import HelperError, HelperFailed, run_in_namespaces

PTMX: Final = "/dev/ptmx"
PTS: Final = "/dev/pts/"
# <asm-generic/ioctls.h>; termios has TIOCGPTN on some builds only, TIOCSPTLCK on none
TIOCGPTN: Final = getattr(termios, "TIOCGPTN", 0x80045430)
TIOCSPTLCK: Final = getattr(termios, "TIOCSPTLCK", 0x40045431)
MASTER_FLAGS: Final = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC


def allocate_pty() -> int:
    """posix_openpt() + unlockpt() in the caller's root: a master whose slave may be opened.

    Pure system calls through the os and fcntl modules, so it is safe in the namespace helper too.
    (grantpt() does nothing on devpts, as glibc knows.)
    """
    fd = os.open(PTMX, MASTER_FLAGS)
    try:
        fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))
    except BaseException:
        os.close(fd)
        raise
    return fd


def pty_path(master: int) -> str:
    """The slave's path from the master (ptsname(): /dev/pts/<TIOCGPTN>)."""
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
    return f"{PTS}{number}"


def _allocate_in_helper() -> tuple[bytes, list[int]]:  # pragma: no cover - runs in the helper
    return b"", [allocate_pty()]


def open_pty(machine: Machine) -> tuple[int, str]:
    """OpenPTY: (master fd, slave path). The caller owns the fd (O_CLOEXEC)."""
    if machine.machine_class is MachineClass.HOST:
        return _open_host_pty()
    if machine.machine_class is not MachineClass.CONTAINER:
        raise from_errno(errno.EOPNOTSUPP)
    if machine.leader <= 0:
        raise from_errno(errno.EINVAL)
    return _open_container_pty(machine)


def _open_host_pty() -> tuple[int, str]:
    try:
        master = allocate_pty()
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None
    try:
        path = pty_path(master)
    except OSError as exc:
        os.close(master)
        raise from_errno(exc.errno or errno.EIO) from None
    return master, path


def _open_container_pty(machine: Machine) -> tuple[int, str]:
    pidfd = machine.leader_ref.fd if machine.leader_ref is not None else -1
    try:
        _, fds = run_in_namespaces(machine.leader, _allocate_in_helper, pidfd=pidfd, user=True)
    except (HelperFailed, HelperError):
        # 252's helper reports nothing but its exit status: any failure inside is EIO
        raise from_errno(errno.EIO) from None
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise from_errno(errno.EIO)
    master = fds[0]
    try:
        return master, pty_path(master)
    except OSError as exc:
        os.close(master)
        raise from_errno(exc.errno or errno.EIO) from None
