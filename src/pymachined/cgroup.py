"""Control groups: which hierarchy is in use, a process's cgroup, and the unit it names."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
from enum import Enum
from pathlib import Path
from typing import Final

from .names import unit_name_is_valid, unit_type

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC: Final = 0x63677270
TMPFS_MAGIC: Final = 0x01021994


class Hierarchy(Enum):
    UNIFIED = "unified"  # pure cgroup2 on /sys/fs/cgroup
    HYBRID = "hybrid"  # cgroup2 on /sys/fs/cgroup/unified, v1 controllers beside it
    LEGACY = "legacy"  # v1 only, systemd's tree in name=systemd


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def fs_type(path: Path) -> int:
    """f_type of statfs(path)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return int.from_bytes(buf.raw[:8], "little", signed=True)


@functools.cache
def hierarchy() -> Hierarchy:
    """Detect the cgroup layout the way systemd does."""
    try:
        if fs_type(CGROUP_ROOT) == CGROUP2_SUPER_MAGIC:
            return Hierarchy.UNIFIED
        if fs_type(CGROUP_ROOT / "unified") == CGROUP2_SUPER_MAGIC:
            return Hierarchy.HYBRID
    except OSError:
        pass
    return Hierarchy.LEGACY


def unified_mount() -> Path:
    """Where the cgroup2 hierarchy is mounted."""
    return CGROUP_ROOT if hierarchy() is Hierarchy.UNIFIED else CGROUP_ROOT / "unified"


def parse_proc_cgroup(text: str, layout: Hierarchy) -> str | None:
    """The systemd cgroup path from the contents of /proc/<pid>/cgroup."""
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if layout is Hierarchy.LEGACY:
            if "name=systemd" in controllers.split(","):
                return path
        elif hier == "0" and controllers == "":
            return path
    return None


def pid_cgroup(pid: int) -> str:
    """The cgroup path of `pid` in the systemd hierarchy; OSError(ESRCH) if it is gone."""
    try:
        with open(f"/proc/{pid}/cgroup", "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        raise OSError(errno.ESRCH, os.strerror(errno.ESRCH)) from None
    path = parse_proc_cgroup(text, hierarchy())
    if path is None:
        raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
    return path


def _cg_unescape(component: str) -> str:
    return component[1:] if component.startswith("_") else component


def unit_from_cgroup_path(path: str) -> str:
    """The unit named by a cgroup path (after its slices), as cg_path_get_unit(); ENXIO if none."""
    for component in path.split("/"):
        if not component:
            continue
        if component.endswith(".slice") and unit_name_is_valid(component):
            continue
        unit = _cg_unescape(component)
        if unit_name_is_valid(unit) and unit_type(unit) != "slice":
            return unit
        break
    raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))


def pid_unit(pid: int) -> str:
    """The unit `pid` runs in, from its cgroup."""
    return unit_from_cgroup_path(pid_cgroup(pid))
