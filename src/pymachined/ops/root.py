"""A machine's root directory, opened for the caller (OpenRootDirectory)."""

from __future__ import annotations

import errno
import os

from ..errors import failed, from_errno, not_supported
from ..machine import Machine, MachineClass


def open_root(machine: Machine) -> int:
    """An O_DIRECTORY fd: "/" for the host, the leader's root (as its mount namespace sees it) for a container."""
    if machine.machine_class is MachineClass.HOST:
        try:
            return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise from_errno(exc.errno or errno.EIO) from None
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("Opening the root directory is only supported on container machines.")
    try:
        return os.open(f"/proc/{machine.leader}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise failed("Child died abnormally.") from None
