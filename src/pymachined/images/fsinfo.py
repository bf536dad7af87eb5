"""File-system facts images need: birth time, inode flags, btrfs subvolumes, block device sizes."""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import struct
from typing import Final

from ..libc import errno_error
from ..libc import libc as _libc

BTRFS_SUPER_MAGIC: Final = 0x9123683E
BTRFS_FIRST_FREE_OBJECTID: Final = 256
FS_IOC_GETFLAGS: Final = 0x80086601
FS_IOC_SETFLAGS: Final = 0x40086602
FS_IMMUTABLE_FL: Final = 0x00000010
BTRFS_IOC_SUBVOL_GETFLAGS: Final = 0x80089419
BTRFS_IOC_SUBVOL_SETFLAGS: Final = 0x4008941A
BTRFS_SUBVOL_RDONLY: Final = 1 << 1
BLKROSET: Final = 0x125D
BLKROGET: Final = 0x125E
BLKGETSIZE64: Final = 0x80081272
CRTIME_XATTR: Final = "user.crtime_usec"

_STATX_BTIME: Final = 0x800
_AT_STATX_SYNC_AS_STAT: Final = 0


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("_reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("_spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("_rest", ctypes.c_uint64 * 20),
    ]


def birth_usec(path: str) -> int | None:
    """statx() birth time in µs, or None where the file system does not record one."""
    buf = _Statx()
    if _libc.statx(-100, os.fsencode(path), _AT_STATX_SYNC_AS_STAT, _STATX_BTIME, ctypes.byref(buf)) < 0:
        return None
    if not buf.stx_mask & _STATX_BTIME:
        return None
    return int(buf.stx_btime.tv_sec) * 1_000_000 + int(buf.stx_btime.tv_nsec) // 1000


def crtime_usec(path: str) -> int:
    """252's file_crtime: the older of the birth time and the user.crtime_usec xattr; 0 if neither exists."""
    candidates: list[int] = []
    born = birth_usec(path)
    if born is not None:
        candidates.append(born)
    try:
        raw = os.getxattr(path, CRTIME_XATTR)
        if len(raw) == 8:
            value = struct.unpack("<Q", raw)[0]
            if 0 < value < 2**64 - 1:
                candidates.append(value)
    except OSError:
        pass
    return min(candidates) if candidates else 0


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_long * 15)]


def _statfs_type(fd: int) -> int:
    buf = _Statfs()
    if _libc.fstatfs(fd, ctypes.byref(buf)) < 0:
        raise errno_error()
    return int(buf.f_type) & 0xFFFFFFFF


def fs_type_of(path: str) -> int:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return _statfs_type(fd)
    finally:
        os.close(fd)


def is_subvolume(path: str, st: os.stat_result) -> bool:
    """True for the top of a btrfs subvolume (inode 256 on btrfs)."""
    if st.st_ino != BTRFS_FIRST_FREE_OBJECTID:
        return False
    try:
        return fs_type_of(path) == BTRFS_SUPER_MAGIC
    except OSError:
        return False


def _ioctl_flags(fd: int, request: int) -> int:
    buf = bytearray(8)
    fcntl.ioctl(fd, request, buf)
    return int(struct.unpack("=Q", bytes(buf))[0])


def inode_flags(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        return int(struct.unpack("=i", bytes(buf))[0]) & 0xFFFFFFFF
    finally:
        os.close(fd)


def set_immutable(path: str, immutable: bool) -> None:
    """Set or clear FS_IMMUTABLE_FL (chattr ±i) on one inode."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("=i", bytes(buf))[0]
        new = flags | FS_IMMUTABLE_FL if immutable else flags & ~FS_IMMUTABLE_FL
        if new != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, bytearray(struct.pack("=i", new)))
    finally:
        os.close(fd)


def is_immutable(path: str) -> bool:
    try:
        return bool(inode_flags(path) & FS_IMMUTABLE_FL)
    except OSError:
        return False


def subvolume_read_only(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(_ioctl_flags(fd, BTRFS_IOC_SUBVOL_GETFLAGS) & BTRFS_SUBVOL_RDONLY)
    except OSError:
        return False
    finally:
        os.close(fd)


def set_subvolume_read_only(path: str, read_only: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flags = _ioctl_flags(fd, BTRFS_IOC_SUBVOL_GETFLAGS)
        new = flags | BTRFS_SUBVOL_RDONLY if read_only else flags & ~BTRFS_SUBVOL_RDONLY
        if new != flags:
            fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, bytearray(struct.pack("=Q", new)))
    finally:
        os.close(fd)


def _block_device_query(path: str, request: int, fmt: str) -> int | None:
    """The integer a read ioctl stores, on the device opened O_RDONLY|O_NONBLOCK; None if either fails."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        buf = bytearray(struct.calcsize(fmt))
        fcntl.ioctl(fd, request, buf)
        return int(struct.unpack(fmt, bytes(buf))[0])
    except OSError:
        return None
    finally:
        os.close(fd)


def block_device_size(path: str) -> int | None:
    """BLKGETSIZE64 of a block device; None if it cannot be opened."""
    return _block_device_query(path, BLKGETSIZE64, "=Q")


def block_device_read_only(path: str) -> bool:
    return bool(_block_device_query(path, BLKROGET, "=i"))


def set_block_device_read_only(path: str, read_only: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        fcntl.ioctl(fd, BLKROSET, bytearray(struct.pack("=i", 1 if read_only else 0)))
    finally:
        os.close(fd)


def write_access_erofs(path: str) -> bool:
    """True if `path` lies on a read-only mount (where 252's access(W_OK) fails with EROFS)."""
    try:
        return os.statvfs(path).f_flag & os.ST_RDONLY != 0
    except OSError:
        return False
