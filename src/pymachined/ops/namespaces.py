"""Entering Linux namespaces from a thread (setns through libc: os.setns is Python ≥ 3.12)."""

from __future__ import annotations

from typing import Final

from ..libc import errno_error
from ..libc import libc as _libc

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWNET: Final = 0x40000000
CLONE_NEWUSER: Final = 0x10000000


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace `fd` refers to."""
    if _libc.setns(fd, nstype) != 0:
        raise errno_error()
