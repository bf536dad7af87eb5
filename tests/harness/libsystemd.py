"""libsystemd's sd-login machine calls through ctypes, as unmodified C clients make them."""

from __future__ import annotations

import ctypes
import os

_lib = ctypes.CDLL("libsystemd.so.0", use_errno=True)
_lib.free.argtypes = [ctypes.c_void_p] if hasattr(_lib, "free") else []
_libc = ctypes.CDLL("libc.so.6")
_libc.free.argtypes = [ctypes.c_void_p]


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise OSError(-rc, f"{what}: {os.strerror(-rc)}")
    return rc


def machine_names() -> list[str]:
    array = ctypes.POINTER(ctypes.c_char_p)()
    n = _check(_lib.sd_get_machine_names(ctypes.byref(array)), "sd_get_machine_names")
    names = [array[i].decode() for i in range(n)] if n else []
    return sorted(names)


def machine_class(name: str) -> str:
    out = ctypes.c_char_p()
    _check(_lib.sd_machine_get_class(name.encode(), ctypes.byref(out)), "sd_machine_get_class")
    return out.value.decode() if out.value else ""


def machine_ifindices(name: str) -> list[int]:
    out = ctypes.POINTER(ctypes.c_int)()
    n = _check(_lib.sd_machine_get_ifindices(name.encode(), ctypes.byref(out)), "sd_machine_get_ifindices")
    return [out[i] for i in range(n)]


def pid_machine_name(pid: int) -> str | None:
    out = ctypes.c_char_p()
    rc = _lib.sd_pid_get_machine_name(pid, ctypes.byref(out))
    if rc < 0:
        return None
    return out.value.decode() if out.value else None
