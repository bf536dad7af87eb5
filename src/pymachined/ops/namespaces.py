"""Entering Linux namespaces from a thread (setns through libc: os.setns is Python ≥ 3.12)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWNET: Final = 0x40000000
CLONE_NEWUSER: Final = 0x10000000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace `fd` refers to."""
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
