"""btrfs subvolumes and quota groups through the kernel's ioctls, the way 252's btrfs-util does it.

252 gives every image subvolume (and the pool itself) a "subtree" qgroup: a higher-level qgroup with the
subvolume's id, holding the subvolume's own (level 0) qgroup and any below it. Usage and limits are read
from and set on that subtree qgroup, falling back to the level-0 one. Errors are OSError with the errno
the ioctl (or 252's wrapper) gives.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from typing import Final

from . import fsinfo
from .pool import UINT64_MAX

_MAGIC: Final = 0x94


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_MAGIC << 8) | nr


_W, _R, _WR = 1, 2, 3
IOC_SUBVOL_CREATE: Final = _ioc(_W, 14, 4096)
IOC_SNAP_DESTROY: Final = _ioc(_W, 15, 4096)
IOC_TREE_SEARCH: Final = _ioc(_WR, 17, 4096)
IOC_INO_LOOKUP: Final = _ioc(_WR, 18, 4096)
IOC_SNAP_CREATE_V2: Final = _ioc(_W, 23, 4096)
IOC_QUOTA_CTL: Final = _ioc(_WR, 40, 16)
IOC_QGROUP_ASSIGN: Final = _ioc(_W, 41, 24)
IOC_QGROUP_CREATE: Final = _ioc(_W, 42, 16)
IOC_QGROUP_LIMIT: Final = _ioc(_R, 43, 48)
IOC_QUOTA_RESCAN: Final = _ioc(_W, 44, 64)
IOC_QUOTA_RESCAN_STATUS: Final = _ioc(_R, 45, 64)
IOC_QUOTA_RESCAN_WAIT: Final = _ioc(0, 46, 0)

ROOT_TREE_OBJECTID: Final = 1
QUOTA_TREE_OBJECTID: Final = 8
ROOT_BACKREF_KEY: Final = 144
QGROUP_STATUS_KEY: Final = 240
QGROUP_INFO_KEY: Final = 242
QGROUP_LIMIT_KEY: Final = 244
QGROUP_RELATION_KEY: Final = 246
FIRST_FREE_OBJECTID: Final = 256
LAST_FREE_OBJECTID: Final = 2**64 - 256
QGROUP_LEVEL_SHIFT: Final = 48
LIMIT_MAX_RFER: Final = 1
LIMIT_MAX_EXCL: Final = 2
LIMIT_FLAGS_ALL: Final = 0xF
SUBVOL_RDONLY: Final = 1 << 1
QUOTA_CTL_ENABLE: Final = 1
_SEARCH_KEY: Final = struct.Struct("=7Q4I4Q")  # 104 bytes: tree id, min/max objectid/offset/transid, types, nr
_SEARCH_HEADER: Final = struct.Struct("=3Q2I")  # transid, objectid, offset, type, len
_NAME_MAX: Final = 4087


def _is_btrfs_fd(fd: int) -> None:
    """ENOTTY unless `fd` lives on btrfs (as 252 checks before any btrfs ioctl)."""
    if fsinfo.fs_type_of(f"/proc/self/fd/{fd}") != fsinfo.BTRFS_SUPER_MAGIC:
        raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))


def _open(path: str, flags: int = 0) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | flags)


def qgroupid(level: int, ident: int) -> int:
    return (level << QGROUP_LEVEL_SHIFT) | ident


def split(qgroup: int) -> tuple[int, int]:
    return qgroup >> QGROUP_LEVEL_SHIFT, qgroup & ((1 << QGROUP_LEVEL_SHIFT) - 1)


def subvol_id(fd: int) -> int:
    _is_btrfs_fd(fd)
    buf = bytearray(struct.pack("=QQ", 0, FIRST_FREE_OBJECTID).ljust(4096, b"\0"))
    fcntl.ioctl(fd, IOC_INO_LOOKUP, buf)
    return int(struct.unpack_from("=Q", buf)[0])


def _ino_lookup_name(fd: int, tree: int, objectid: int) -> str:
    buf = bytearray(struct.pack("=QQ", tree, objectid).ljust(4096, b"\0"))
    fcntl.ioctl(fd, IOC_INO_LOOKUP, buf)
    return os.fsdecode(bytes(buf[16:]).split(b"\0", 1)[0])


def _search(
    fd: int, tree: int, objectids: tuple[int, int], types: tuple[int, int], offsets: tuple[int, int]
) -> Iterator[tuple[int, int, int, bytes]]:
    """(objectid, type, offset, body) of every item in the key range, like 252's search loops."""
    key = [tree, objectids[0], objectids[1], offsets[0], offsets[1], 0, UINT64_MAX, types[0], types[1]]
    while (key[1], key[7], key[3]) <= (key[2], key[8], key[4]):
        buf = bytearray(_SEARCH_KEY.pack(*key, 256, 0, 0, 0, 0, 0).ljust(4096, b"\0"))
        fcntl.ioctl(fd, IOC_TREE_SEARCH, buf)
        count = _SEARCH_KEY.unpack_from(buf)[9]
        if count <= 0:
            return
        pos = _SEARCH_KEY.size
        for _ in range(count):
            _transid, objectid, offset, type_, length = _SEARCH_HEADER.unpack_from(buf, pos)
            body = bytes(buf[pos + _SEARCH_HEADER.size : pos + _SEARCH_HEADER.size + length])
            pos += _SEARCH_HEADER.size + length
            key[1], key[7], key[3] = objectid, type_, offset
            yield objectid, type_, offset, body
        # next key (btrfs_ioctl_search_args_inc)
        if key[3] < UINT64_MAX:
            key[3] += 1
        elif key[7] < 255:
            key[7], key[3] = key[7] + 1, 0
        elif key[1] < UINT64_MAX:
            key[1], key[7], key[3] = key[1] + 1, 0, 0
        else:
            return


def _quota_search(
    fd: int, objectids: tuple[int, int], types: tuple[int, int], offsets: tuple[int, int]
) -> Iterator[tuple[int, int, int, bytes]]:
    try:
        yield from _search(fd, QUOTA_TREE_OBJECTID, objectids, types, offsets)
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # quota tree missing: quota disabled
            raise


def find_parents(fd: int, qgroup: int) -> list[int]:
    _is_btrfs_fd(fd)
    return [
        offset
        for objectid, type_, offset, _b in _quota_search(
            fd, (qgroup, qgroup), (QGROUP_RELATION_KEY, QGROUP_RELATION_KEY), (0, UINT64_MAX)
        )
        if type_ == QGROUP_RELATION_KEY and offset >= objectid and objectid == qgroup
    ]


def get_quota(fd: int, qgroup: int) -> tuple[int, int, int, int]:
    """(referenced, exclusive, referenced max, exclusive max) of a qgroup; ENODATA if it has none."""
    _is_btrfs_fd(fd)
    info: tuple[int, int] | None = None
    limit: tuple[int, int] | None = None
    for objectid, type_, offset, body in _quota_search(
        fd, (0, 0), (QGROUP_STATUS_KEY, QGROUP_LIMIT_KEY), (qgroup, qgroup)
    ):
        if objectid != 0 or offset != qgroup:
            continue
        if type_ == QGROUP_INFO_KEY:
            _gen, rfer, _rc, excl = struct.unpack_from("<4Q", body)
            info = (rfer, excl)
        elif type_ == QGROUP_LIMIT_KEY:
            flags, max_rfer, max_excl = struct.unpack_from("<3Q", body)
            limit = (
                max_rfer if flags & LIMIT_MAX_RFER else UINT64_MAX,
                max_excl if flags & LIMIT_MAX_EXCL else UINT64_MAX,
            )
        if info is not None and limit is not None:
            break
    if info is None and limit is None:
        raise OSError(errno.ENODATA, os.strerror(errno.ENODATA))
    return (*(info or (UINT64_MAX, UINT64_MAX)), *(limit or (UINT64_MAX, UINT64_MAX)))


def find_subtree_qgroup(fd: int, subvol: int) -> tuple[int, bool]:
    """The lowest-level qgroup with the subvolume's id above its leaf; the leaf (False) if there is none."""
    lowest: tuple[int, int] | None = None
    for parent in find_parents(fd, subvol):
        level, ident = split(parent)
        if ident == subvol and (lowest is None or level < lowest[0]):
            lowest = (level, parent)
    return (subvol, False) if lowest is None else (lowest[1], True)


def subtree_quota(fd: int) -> tuple[int, int, int, int]:
    group, _found = find_subtree_qgroup(fd, subvol_id(fd))
    return get_quota(fd, group)


def rescan_ongoing(fd: int) -> bool:
    buf = bytearray(64)
    fcntl.ioctl(fd, IOC_QUOTA_RESCAN_STATUS, buf)
    return bool(struct.unpack_from("=Q", buf)[0])


def _rescan_wait(fd: int) -> None:
    try:
        fcntl.ioctl(fd, IOC_QUOTA_RESCAN_WAIT)
    except OSError:
        pass


def _retry_busy(fd: int, request: int, buf: bytearray) -> int:
    for attempt in range(11):
        try:
            return int(fcntl.ioctl(fd, request, buf))
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 10:
                raise
            _rescan_wait(fd)
    raise AssertionError("unreachable")


def set_limit(fd: int, qgroup: int, referenced_max: int) -> None:
    """btrfs_qgroup_set_limit_fd(); qgroup 0 means the subvolume's own."""
    qgroup = qgroup or subvol_id(fd)
    _is_btrfs_fd(fd)
    buf = bytearray(struct.pack("=QQQQQQ", qgroup, LIMIT_MAX_RFER, referenced_max, 0, 0, 0))
    _retry_busy(fd, IOC_QGROUP_LIMIT, buf)


def set_subtree_limit(fd: int, referenced_max: int) -> None:
    group, _found = find_subtree_qgroup(fd, subvol_id(fd))
    set_limit(fd, group, referenced_max)


def _qgroup_create(fd: int, qgroup: int, create: bool = True) -> None:
    _is_btrfs_fd(fd)
    buf = bytearray(struct.pack("=QQ", 1 if create else 0, qgroup))
    try:
        _retry_busy(fd, IOC_QGROUP_CREATE, buf)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTCONN):
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN)) from None
        raise


def _qgroup_assign(fd: int, child: int, parent: int, assign: bool = True) -> None:
    _is_btrfs_fd(fd)
    buf = bytearray(struct.pack("=QQQ", 1 if assign else 0, child, parent))
    if _retry_busy(fd, IOC_QGROUP_ASSIGN, buf) > 0:  # the kernel asks for a rescan
        try:
            fcntl.ioctl(fd, IOC_QUOTA_RESCAN, bytearray(64))
        except OSError:
            pass


def destroy_qgroup_recursive(fd: int, qgroup: int) -> None:
    _level, ident = split(qgroup)
    for parent in find_parents(fd, qgroup):
        _qgroup_assign(fd, qgroup, parent, assign=False)
        if split(parent)[1] == ident:
            try:
                destroy_qgroup_recursive(fd, parent)
            except OSError:
                pass
    _qgroup_create(fd, qgroup, create=False)


def get_parent(fd: int, subvol: int) -> int | None:
    _is_btrfs_fd(fd)
    for objectid, type_, offset, _b in _search(
        fd, ROOT_TREE_OBJECTID, (subvol, subvol), (ROOT_BACKREF_KEY, ROOT_BACKREF_KEY), (0, UINT64_MAX)
    ):
        if type_ == ROOT_BACKREF_KEY and objectid == subvol:
            return offset
    return None


def auto_qgroup(fd: int, subvol: int, insert_intermediary: bool) -> None:
    """btrfs_subvol_auto_qgroup_fd(): account the subvolume with its parent's qgroups (+ its own subtree one)."""
    if subvol == 0:
        if not fsinfo.is_subvolume(f"/proc/self/fd/{fd}", os.fstat(fd)):
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        subvol = subvol_id(fd)
    if find_parents(fd, subvol):
        return
    parent = get_parent(fd, subvol)
    groups = [] if parent is None else find_parents(fd, parent)
    if not insert_intermediary:
        for group in groups:
            _assign_tolerating_exists(fd, subvol, group)
        return
    lowest = min((split(g)[0] for g in groups), default=256)
    if lowest <= 1:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
    new = qgroupid(lowest - 1, subvol)
    created = False
    try:
        _qgroup_create(fd, new)
        created = True
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
    try:
        for group in groups:
            _assign_tolerating_exists(fd, new, group)
        _assign_tolerating_exists(fd, subvol, new)
    except OSError:
        if created:
            try:
                destroy_qgroup_recursive(fd, new)
            except OSError:
                pass
        raise


def _assign_tolerating_exists(fd: int, child: int, parent: int) -> None:
    try:
        _qgroup_assign(fd, child, parent)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise


def auto_qgroup_path(path: str, insert_intermediary: bool = True) -> None:
    fd = _open(path, os.O_DIRECTORY)
    try:
        auto_qgroup(fd, 0, insert_intermediary)
    finally:
        os.close(fd)


def _copy_limits(fd: int, old: int, new: int) -> bool:
    _is_btrfs_fd(fd)
    for objectid, type_, offset, body in _quota_search(fd, (0, 0), (QGROUP_LIMIT_KEY, QGROUP_LIMIT_KEY), (old, old)):
        if objectid != 0 or type_ != QGROUP_LIMIT_KEY or offset != old:
            continue
        flags, max_rfer, max_excl, rsv_rfer, rsv_excl = struct.unpack_from("<5Q", body)
        buf = bytearray(struct.pack("=6Q", new, flags & LIMIT_FLAGS_ALL, max_rfer, max_excl, rsv_rfer, rsv_excl))
        _retry_busy(fd, IOC_QGROUP_LIMIT, buf)
        return True
    return False


def _copy_quota_hierarchy(fd: int, old: int, new: int) -> None:
    old_groups = find_parents(fd, old)
    if not old_groups:
        return
    parent = get_parent(fd, old)
    parent_groups = [] if parent is None else find_parents(fd, parent)
    intermediary = copy_from_parent = False
    for group in old_groups:
        if split(group)[1] == old:
            intermediary = True
            break
        if group in parent_groups:
            copy_from_parent = True
    if intermediary or copy_from_parent:
        auto_qgroup(fd, new, intermediary)


def _copy_subtree_limits(fd: int, old: int, new: int) -> None:
    _copy_limits(fd, old, new)
    old_group, found = find_subtree_qgroup(fd, old)
    if not found:
        return
    new_group, found = find_subtree_qgroup(fd, new)
    if found:
        _copy_limits(fd, old_group, new_group)


def _vol_args_v2(name: str, source_fd: int, flags: int) -> bytearray:
    encoded = os.fsencode(name)[:4039]
    return bytearray(struct.pack("=qQQ32x", source_fd, 0, flags) + encoded.ljust(4040, b"\0"))


def _snapshot_children(old_fd: int, new_fd: int, name: str, old_id: int, read_only: bool) -> None:
    """subvol_snapshot_children() with RECURSIVE|QUOTA: snapshot, then nested subvolumes, then quota."""
    fcntl.ioctl(new_fd, IOC_SNAP_CREATE_V2, _vol_args_v2(name, old_fd, SUBVOL_RDONLY if read_only else 0))
    old_id = old_id or subvol_id(old_fd)
    child = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=new_fd)
    try:
        new_id = subvol_id(child)
    finally:
        os.close(child)
    try:
        _copy_quota_hierarchy(new_fd, old_id, new_id)
    except OSError:
        pass
    for objectid, type_, offset, body in list(
        _search(
            old_fd,
            ROOT_TREE_OBJECTID,
            (FIRST_FREE_OBJECTID, LAST_FREE_OBJECTID),
            (ROOT_BACKREF_KEY, ROOT_BACKREF_KEY),
            (old_id, old_id),
        )
    ):
        if type_ != ROOT_BACKREF_KEY or offset != old_id or objectid == new_id:
            continue
        dirid, _seq, name_len = struct.unpack_from("<QQH", body)
        sub_name = os.fsdecode(body[18 : 18 + name_len])
        directory = _ino_lookup_name(old_fd, old_id, dirid)
        old_child = os.open(
            os.path.join(directory, sub_name),
            os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW,
            dir_fd=old_fd,
        )
        new_parent = os.open(
            os.path.join(name, directory), os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=new_fd
        )
        top = f"/proc/self/fd/{new_fd}/{name}"
        try:
            if read_only:
                fsinfo.set_subvolume_read_only(top, False)
            try:
                os.rmdir(sub_name, dir_fd=new_parent)
                _snapshot_children(old_child, new_parent, sub_name, objectid, read_only)
            finally:
                if read_only:
                    fsinfo.set_subvolume_read_only(top, True)
        finally:
            os.close(old_child)
            os.close(new_parent)
    try:
        _copy_subtree_limits(new_fd, old_id, new_id)
    except OSError:
        pass


def snapshot(source: str, target: str, read_only: bool) -> None:
    """btrfs_subvol_snapshot() of a subvolume, RECURSIVE|QUOTA, read-only if asked."""
    old_fd = _open(source, os.O_DIRECTORY)
    try:
        new_fd = _open(os.path.dirname(target), os.O_DIRECTORY)
        try:
            _snapshot_children(old_fd, new_fd, os.path.basename(target), 0, read_only)
        finally:
            os.close(new_fd)
    finally:
        os.close(old_fd)


def create_subvolume(path: str) -> None:
    """btrfs_subvol_make(): ENOTTY where the parent is not on btrfs."""
    fd = _open(os.path.dirname(path), os.O_DIRECTORY)
    try:
        _is_btrfs_fd(fd)
        name = os.fsencode(os.path.basename(path))
        fcntl.ioctl(fd, IOC_SUBVOL_CREATE, bytearray(struct.pack("=q", 0) + name.ljust(4088, b"\0")))
    finally:
        os.close(fd)


def _remove_children(fd: int, name: str, subvol: int) -> None:
    """subvol_remove_children() with RECURSIVE|QUOTA."""
    sub_fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        if not fsinfo.is_subvolume(f"/proc/self/fd/{sub_fd}", os.fstat(sub_fd)):
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        subvol = subvol or subvol_id(sub_fd)
        args = bytearray(struct.pack("=q", 0) + os.fsencode(name)[:_NAME_MAX].ljust(4088, b"\0"))
        try:
            fcntl.ioctl(fd, IOC_SNAP_DESTROY, args)
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            made_writable = False
            for objectid, type_, offset, body in list(
                _search(
                    fd,
                    ROOT_TREE_OBJECTID,
                    (FIRST_FREE_OBJECTID, LAST_FREE_OBJECTID),
                    (ROOT_BACKREF_KEY, ROOT_BACKREF_KEY),
                    (subvol, subvol),
                )
            ):
                if type_ != ROOT_BACKREF_KEY or offset != subvol:
                    continue
                dirid, _seq, name_len = struct.unpack_from("<QQH", body)
                child_name = os.fsdecode(body[18 : 18 + name_len])
                directory = _ino_lookup_name(fd, subvol, dirid)
                if not made_writable:
                    fsinfo.set_subvolume_read_only(f"/proc/self/fd/{sub_fd}", False)
                    made_writable = True
                if not directory:
                    _remove_children(sub_fd, child_name, objectid)
                else:
                    parent = os.open(
                        directory, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=sub_fd
                    )
                    try:
                        _remove_children(parent, child_name, objectid)
                    finally:
                        os.close(parent)
            fcntl.ioctl(fd, IOC_SNAP_DESTROY, args)
    finally:
        os.close(sub_fd)
    try:
        destroy_qgroup_recursive(fd, subvol)
    except OSError:
        pass


def delete_subvolume(path: str) -> None:
    fd = _open(os.path.dirname(path) or ".", os.O_DIRECTORY)
    try:
        _remove_children(fd, os.path.basename(path), 0)
    finally:
        os.close(fd)


def subvolume_quota(path: str) -> tuple[int, int, int, int] | None:
    """The subtree quota of the subvolume at `path` as image discovery reads it; None during a rescan or without."""
    try:
        fd = _open(path, os.O_DIRECTORY)
    except OSError:
        return None
    try:
        if rescan_ongoing(fd):
            return None
        return subtree_quota(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def pool_quota(path: str) -> tuple[int, int, int, int] | None:
    """PoolUsage/PoolLimit: the subtree quota of the pool directory (no rescan check, as 252)."""
    try:
        fd = _open(path, os.O_DIRECTORY)
    except OSError:
        return None
    try:
        return subtree_quota(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def enable_quota(fd: int) -> None:
    _is_btrfs_fd(fd)
    fcntl.ioctl(fd, IOC_QUOTA_CTL, bytearray(struct.pack("=QQ", QUOTA_CTL_ENABLE, 0)))
