"""Image metadata (hostname, machine ID, machine-info, os-release), read safely inside the image.

Directory and subvolume images are read with openat2(RESOLVE_IN_ROOT), so symlinks stay inside the image.
Raw images are attached to a read-only loop device and mounted *detached* (fsopen/fsmount): the mount is
never attached to any mount namespace, so no helper process is needed and nothing leaks if we die.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from ..libc import errno_error
from ..libc import libc as _libc
from ..names import hostname_is_valid
from ..ops.os_release import open_in_root
from ..state import parse_env
from .image import Image, ImageType

READ_MAX: Final = 4 << 20
LOOP_CTL_GET_FREE: Final = 0x4C82
LOOP_CONFIGURE: Final = 0x4C0A
LO_FLAGS_READ_ONLY: Final = 1
LO_FLAGS_AUTOCLEAR: Final = 4
_SYS_FSOPEN: Final = 430
_SYS_FSCONFIG: Final = 431
_SYS_FSMOUNT: Final = 432
_FSCONFIG_SET_FLAG: Final = 0
_FSCONFIG_SET_STRING: Final = 1
_FSCONFIG_CMD_CREATE: Final = 6
_MOUNT_ATTR_RDONLY: Final = 0x1
_MOUNT_ATTR_NOSUID: Final = 0x2
_MOUNT_ATTR_NODEV: Final = 0x4
_MOUNT_ATTR_NOEXEC: Final = 0x8
_CLOEXEC: Final = 1
SECTOR: Final = 512
# GPT partition types that hold a root file system (x86-64, arm64, x86, generic Linux data)
ROOT_TYPES: Final = (
    uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
    uuid.UUID("b921b045-1df0-41c3-af44-4c6f280d3fae"),
    uuid.UUID("44479540-f297-41b2-9af7-d131d5f0458a"),
)
LINUX_DATA: Final = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


@dataclass(slots=True)
class Metadata:
    """What GetImageHostname/MachineID/MachineInfo/OSRelease answer."""

    hostname: str = ""
    machine_id: bytes = b""
    machine_info: dict[str, str] = field(default_factory=dict)
    os_release: dict[str, str] = field(default_factory=dict)


def _read_in_root(root_fd: int, path: str) -> bytes | None:
    try:
        fd = open_in_root(root_fd, path)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read(READ_MAX)
    except OSError:
        return None


def _hostname_cleanup(text: str) -> str:
    out: list[str] = []
    dot = True
    for c in text:
        if c == ".":
            if dot:
                continue
            out.append(c)
            dot = True
        elif c.isascii() and (c.isalnum() or c == "-"):
            out.append(c)
            dot = False
    name = "".join(out)[:64]
    return name.rstrip(".")


def parse_hostname(data: bytes) -> str:
    """252's read_etc_hostname(): the first line neither empty nor a comment, cleaned up and validated."""
    for raw_line in data.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name = _hostname_cleanup(line)
        return name if hostname_is_valid(name) else ""
    return ""


def parse_machine_id(data: bytes) -> bytes:
    """16 bytes from exactly 32 hex digits (optionally a newline); anything else counts as no ID."""
    text = data[:-1] if data.endswith(b"\n") else data
    if len(text) != 32:
        return b""
    try:
        value = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return b""
    return value if any(value) else b""


def parse_env_bytes(data: bytes) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return parse_env(text)


def read_tree_metadata(root_fd: int) -> Metadata:
    """The four items of the tree at `root_fd`; unreadable files leave their item empty (as 252 logs only)."""
    meta = Metadata()
    data = _read_in_root(root_fd, "etc/hostname")
    if data is not None:
        meta.hostname = parse_hostname(data)
    data = _read_in_root(root_fd, "etc/machine-id")
    if data is not None:
        meta.machine_id = parse_machine_id(data)
    data = _read_in_root(root_fd, "etc/machine-info")
    if data is not None:
        meta.machine_info = parse_env_bytes(data)
    override = os.environ.get("SYSTEMD_OS_RELEASE")
    for path in (override,) if override else ("etc/os-release", "usr/lib/os-release"):
        data = _read_in_root(root_fd, path)
        if data is not None:
            meta.os_release = parse_env_bytes(data)
            break
    return meta


def read_metadata(image: Image) -> Metadata:
    """image_read_metadata() without the lock; OSError with 252's errno on failure."""
    if image.type in (ImageType.DIRECTORY, ImageType.SUBVOLUME):
        root_fd = os.open(image.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return read_tree_metadata(root_fd)
        finally:
            os.close(root_fd)
    if image.type is ImageType.RAW:
        with _attached(image.path) as (device, offset, fstype):
            return _read_mounted(device, fstype)
    if image.type is ImageType.BLOCK:
        fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            offset, _size, fstype = _dissect(fd)
        finally:
            os.close(fd)
        if offset:
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return _read_mounted(image.path, fstype)
    raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))


def _probe_fs(fd: int, offset: int) -> str | None:
    head = os.pread(fd, 68 * 1024, offset)
    if len(head) >= 1082 and head[1080:1082] == b"\x53\xef":
        return "ext4"
    if head[:4] == b"XFSB":
        return "xfs"
    if len(head) >= 65536 + 72 and head[65536 + 64 : 65536 + 72] == b"_BHRfS_M":
        return "btrfs"
    if head[:4] == b"hsqs":
        return "squashfs"
    if len(head) >= 1028 and head[1024:1028] == b"\xe2\xe1\xf5\xe0":
        return "erofs"
    return None


def _dissect(fd: int) -> tuple[int, int, str]:
    """(offset, size, fstype) of the root file system: a bare file system or a GPT root partition. ENOPKG else."""
    fstype = _probe_fs(fd, 0)
    if fstype is not None:
        return 0, 0, fstype
    header = os.pread(fd, SECTOR, SECTOR)
    if header[:8] == b"EFI PART":
        entries_lba, count, entry_size = struct.unpack_from("<QII", header, 72)
        table = os.pread(fd, count * entry_size, entries_lba * SECTOR)
        candidates: list[tuple[uuid.UUID, int, int]] = []
        for i in range(count):
            entry = table[i * entry_size : (i + 1) * entry_size]
            if len(entry) < 48:
                break
            type_guid = uuid.UUID(bytes_le=entry[:16])
            first, last = struct.unpack_from("<QQ", entry, 32)
            if type_guid.int:
                candidates.append((type_guid, first, last))
        roots = [c for c in candidates if c[0] in ROOT_TYPES]
        if not roots:
            roots = [c for c in candidates if c[0] == LINUX_DATA]
            if len(roots) != 1:
                roots = []
        if roots:
            _type, first, last = roots[0]
            offset = first * SECTOR
            fstype = _probe_fs(fd, offset)
            if fstype is not None:
                return offset, (last - first + 1) * SECTOR, fstype
    raise OSError(errno.ENOPKG, os.strerror(errno.ENOPKG))


@contextmanager
def _attached(path: str) -> Iterator[tuple[str, int, str]]:
    """A read-only, auto-clearing loop device for the root file system in the raw image at `path`."""
    backing = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset, size, fstype = _dissect(backing)
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _attempt in range(16):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
                info = struct.pack(
                    "<QQQQQIIII64s64s32sQQ",
                    0,
                    0,
                    0,
                    offset,
                    size,
                    0,
                    0,
                    0,
                    LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                    b"",
                    b"",
                    b"",
                    0,
                    0,
                )
                config = struct.pack("<II", backing, 0) + info + bytes(64)
                try:
                    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                break
            else:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        finally:
            os.close(control)
        try:
            yield device, offset, fstype
        finally:
            os.close(loop_fd)  # autoclear: the device goes away with its last user
    finally:
        os.close(backing)


def _syscall(number: int, *arguments: object) -> int:
    result = int(_libc.syscall(number, *arguments))
    if result < 0:
        raise errno_error()
    return result


def _read_mounted(device: str, fstype: str) -> Metadata:
    """Mount `device` read-only and detached, read the metadata, drop the mount."""
    fs_fd = _syscall(_SYS_FSOPEN, fstype.encode(), _CLOEXEC)
    try:
        _syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_SET_STRING, b"source", device.encode(), 0)
        _syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_SET_FLAG, b"ro", None, 0)
        _syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0)
        flags = _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC
        mount_fd = _syscall(_SYS_FSMOUNT, fs_fd, _CLOEXEC, flags)
    finally:
        os.close(fs_fd)
    try:
        return read_tree_metadata(mount_fd)
    finally:
        os.close(mount_fd)
