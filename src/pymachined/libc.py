"""The C library, for the system calls Python has no wrapper for (openat2, setns, open_tree, …)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Final

libc: Final = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def errno_error(filename: str | None = None) -> OSError:
    """The OSError for the errno the last failed libc call left."""
    err = ctypes.get_errno()
    if filename is None:
        return OSError(err, os.strerror(err))
    return OSError(err, os.strerror(err), filename)
