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

from .libc import errno_error
from .libc import libc as _libc
from .names import unit_name_is_valid, unit_type

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC: Final = 0x63677270
TMPFS_MAGIC: Final = 0x01021994


class Hierarchy(Enum):
    UNIFIED = "unified"  # pure cgroup2 on /sys/fs/cgroup
    HYBRID = "hybrid"  # cgroup2 on /sys/fs/cgroup/unified, v1 controllers beside it
    LEGACY = "legacy"  # v1 only, systemd's tree in name=systemd


def fs_type(path: Path) -> int:
    """f_type of statfs(path)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        raise errno_error(str(path))
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


def read_small(path: str) -> bytes:
    """A /proc or cgroupfs file, read with one open and read (open() adds fstat, lseek and ioctl)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
        text = read_small(f"/proc/{pid}/cgroup").decode("utf-8", "surrogateescape")
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


def cgroup_dir(path: str) -> Path:
    """The directory of cgroup `path` (as /proc/<pid>/cgroup names it) in the cgroup2 mount."""
    return unified_mount() / path.lstrip("/")


def events_file(path: str) -> str:
    """cgroup.events of cgroup `path`, as a string (this is on every registration's path)."""
    relative = path.strip("/")
    return f"{_unified_mount_str()}/{relative}/cgroup.events" if relative else f"{_unified_mount_str()}/cgroup.events"


@functools.cache
def _unified_mount_str() -> str:
    return str(unified_mount())


def unit_cgroup_path(path: str, unit: str) -> str:
    """The cgroup of `unit` within a process's cgroup path (the path cut after the unit)."""
    parts = path.split("/")
    for i, component in enumerate(parts):
        if component and _cg_unescape(component) == unit:
            return "/".join(parts[: i + 1]) or "/"
    raise OSError(errno.ENXIO, os.strerror(errno.ENXIO))


def slice_path(slice_unit: str) -> str:
    """The cgroup path of a slice: "a-b.slice" → "/a.slice/a-b.slice"; "-.slice" → "/"."""
    if slice_unit == "-.slice":
        return "/"
    stem = slice_unit.removesuffix(".slice")
    parts = stem.split("-")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))


def create(path: str) -> bool:
    """mkdir -p the cgroup; True if the last directory was created now."""
    target = cgroup_dir(path)
    existed = target.is_dir()
    target.mkdir(parents=True, exist_ok=True)
    return not existed


def attach(path: str, pid: int) -> None:
    (cgroup_dir(path) / "cgroup.procs").write_text(f"{pid}\n")


def pids(path: str, recursive: bool = True) -> list[int]:
    """PIDs of the processes in the cgroup (and, recursively, below it)."""
    root = cgroup_dir(path)
    found: list[int] = []
    dirs = [root]
    while dirs:
        d = dirs.pop()
        try:
            found.extend(int(p) for p in (d / "cgroup.procs").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        if recursive:
            try:
                dirs.extend(e for e in d.iterdir() if e.is_dir())
            except FileNotFoundError:
                pass
    return found


def signal_all(path: str, signum: int) -> int:
    """Send `signum` to every process of the cgroup subtree; the number signalled."""
    sent = 0
    for pid in pids(path):
        try:
            os.kill(pid, signum)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def kill_all(path: str) -> None:
    """SIGKILL the subtree: cgroup.kill where the kernel has it (5.14+), else one by one."""
    kill_file = cgroup_dir(path) / "cgroup.kill"
    try:
        kill_file.write_text("1\n")
        return
    except FileNotFoundError:
        if not cgroup_dir(path).is_dir():
            return
    except OSError:
        pass
    signal_all(path, 9)


def is_populated(path: str) -> bool:
    """True while any process lives in the cgroup subtree (cgroup.events: populated 1)."""
    try:
        text = read_small(events_file(path))
    except FileNotFoundError:
        return False
    return b"populated 1" in text


def exists(path: str) -> bool:
    return cgroup_dir(path).is_dir()


def remove(path: str) -> None:
    """rmdir the cgroup and its empty children, depth first."""
    root = cgroup_dir(path)
    if not root.is_dir() or root == unified_mount():
        return
    for dirpath, _dirnames, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def controllers(path: str) -> set[str]:
    """Controllers available to the cgroup's children."""
    try:
        return set((cgroup_dir(path) / "cgroup.controllers").read_text().split())
    except FileNotFoundError:
        return set()


OWNER_XATTR: Final = "trusted.pymachined.scope"


def mark_owned(path: str, unit: str) -> None:
    """Record on the cgroup itself that pymachined made it (survives a daemon restart)."""
    try:
        os.setxattr(cgroup_dir(path), OWNER_XATTR, unit.encode())
    except OSError:
        pass


def owned_by_us(path: str, unit: str) -> bool:
    try:
        return os.getxattr(cgroup_dir(path), OWNER_XATTR) == unit.encode()
    except OSError:
        return False
