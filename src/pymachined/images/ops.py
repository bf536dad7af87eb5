"""Changing the pool: remove, rename, clone, mark read-only, limits, clean (A.5), with 252's checks in order.

Every function blocks (the bus adaptor runs the long ones as operations in worker threads) and raises
MachineError carrying the errno 252's worker or handler would report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
import struct
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import MachineError, from_errno, not_supported
from ..libc import libc as _libc
from ..ops.copy import copy_file_data, copy_tree_at
from . import btrfs, fsinfo, paths
from .discovery import discover, find
from .image import Image, ImageType
from .lock import image_name_lock, image_path_lock
from .pool import UINT64_MAX

NSPAWN_SETTINGS_DIRS: Final = ("/etc/systemd/nspawn", "/run/systemd/nspawn")
LIMIT_MAX: Final = 2**63 - 1
_RENAME_NOREPLACE: Final = 1
_AT_FDCWD: Final = -100

Cancelled = Callable[[], bool]


def _errno_of(exc: OSError) -> MachineError:
    return from_errno(exc.errno or errno.EIO)


def _refuse_vendor_or_host(image: Image) -> None:
    if image.is_vendor or image.is_host:
        raise from_errno(errno.EROFS)


def _rename_noreplace(old: str, new: str) -> None:
    if _libc.renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), _RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS):
        raise OSError(err, os.strerror(err), new)
    if os.path.lexists(new):  # fallback where the file system lacks RENAME_NOREPLACE
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), new)
    os.rename(old, new)


def _side_files(image: Image, name: str) -> list[tuple[str, str]]:
    """(directory, file name) of the settings and root-hash files that go with `name`."""
    directory = os.path.dirname(image.path)
    files = [(d, f"{name}.nspawn") for d in (*NSPAWN_SETTINGS_DIRS, directory)]
    files.append((directory, f"{name}.roothash"))
    return files


def _rm_rf(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    shutil.rmtree(path)


def remove(image: Image) -> None:
    """image_remove(): vendor/host EROFS, exclusive path lock (EBUSY), then by type; side files after."""
    _refuse_vendor_or_host(image)
    try:
        with image_path_lock(image.path, exclusive=True):
            if image.type is ImageType.SUBVOLUME:
                btrfs.delete_subvolume(image.path)  # recursively, with the qgroups (252's REMOVE_QUOTA)
            elif image.type is ImageType.DIRECTORY:
                if os.path.islink(image.path):
                    os.unlink(image.path)
                else:
                    try:
                        fsinfo.set_immutable(image.path, False)
                    except OSError:
                        pass
                    _rm_rf(image.path)
            elif image.type is ImageType.RAW:
                os.unlink(image.path)
            elif image.type is ImageType.BLOCK:
                if not image.path.startswith("/dev/"):
                    os.unlink(image.path)
    except OSError as exc:
        raise _errno_of(exc) from None
    for directory, name in _side_files(image, image.name):
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def rename(image: Image, new_name: str, search_paths: Sequence[str] | None = None) -> str:
    """image_rename() after the name check; returns the new path."""
    _refuse_vendor_or_host(image)
    try:
        with image_path_lock(image.path, exclusive=True), image_name_lock(new_name):
            if find(new_name, search_paths) is not None:
                raise from_errno(errno.EEXIST)
            directory = os.path.dirname(image.path)
            if image.type in (ImageType.DIRECTORY, ImageType.SUBVOLUME):
                new_path = os.path.join(directory, new_name)
            elif image.type is ImageType.RAW:
                new_path = os.path.join(directory, f"{new_name}.raw")
            elif image.type is ImageType.BLOCK:
                if image.path.startswith("/dev/"):
                    raise from_errno(errno.EROFS)
                new_path = os.path.join(directory, new_name)
            else:
                raise from_errno(errno.EOPNOTSUPP)
            immutable = image.type is ImageType.DIRECTORY and fsinfo.is_immutable(image.path)
            if immutable:
                fsinfo.set_immutable(image.path, False)
            try:
                _rename_noreplace(image.path, new_path)
            finally:
                if immutable:
                    target = new_path if os.path.lexists(new_path) else image.path
                    try:
                        fsinfo.set_immutable(target, True)
                    except OSError:
                        pass
    except OSError as exc:
        raise _errno_of(exc) from None
    for (old_dir, old_file), (_new_dir, new_file) in zip(
        _side_files(image, image.name), _side_files(image, new_name), strict=True
    ):
        try:
            _rename_noreplace(os.path.join(old_dir, old_file), os.path.join(old_dir, new_file))
        except OSError:
            pass
    return new_path


def _pool_is_btrfs(pool: str) -> bool:
    try:
        return fsinfo.fs_type_of(pool) == fsinfo.BTRFS_SUPER_MAGIC
    except OSError:
        return False


def _clone_tree(image: Image, target: str, read_only: bool, cancelled: Cancelled | None) -> None:
    pool = os.path.dirname(target)
    on_btrfs = _pool_is_btrfs(pool)
    if image.type is ImageType.SUBVOLUME and on_btrfs:
        btrfs.snapshot(image.path, target, read_only)
        return
    subvolume = on_btrfs
    if on_btrfs:
        btrfs.create_subvolume(target)
    else:
        os.mkdir(target, 0o755)
    source_fd = os.open(image.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pool_fd = os.open(pool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # an image clone keeps everything: ACLs, file capabilities and security labels too
            err = copy_tree_at(
                source_fd, ".", pool_fd, os.path.basename(target), None, False, cancelled, all_xattrs=True
            )
        finally:
            os.close(pool_fd)
    finally:
        os.close(source_fd)
    if err:
        try:
            if subvolume:
                btrfs.delete_subvolume(target)
            else:
                _rm_rf(target)
        except OSError:
            pass
        raise OSError(err, os.strerror(err), target)
    if read_only:
        try:
            if subvolume:
                fsinfo.set_subvolume_read_only(target, True)
            else:
                fsinfo.set_immutable(target, True)
        except OSError:
            pass


def _clone_raw(image: Image, target: str, read_only: bool, cancelled: Cancelled | None) -> None:
    pool = os.path.dirname(target)
    temporary = os.path.join(pool, f".#{os.path.basename(target)}{os.urandom(8).hex()}")
    source = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444 if read_only else 0o644)
        try:
            copy_file_data(source, fd)
            os.fchmod(fd, 0o444 if read_only else 0o644)
            crtime = fsinfo.crtime_usec(image.path)
            if crtime:
                try:
                    os.setxattr(fd, fsinfo.CRTIME_XATTR, struct.pack("<Q", crtime))
                except OSError:
                    pass
        finally:
            os.close(fd)
        if cancelled is not None and cancelled():
            raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
        _rename_noreplace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    finally:
        os.close(source)


def clone(
    image: Image,
    new_name: str,
    read_only: bool,
    pool: str | None = None,
    search_paths: Sequence[str] | None = None,
    cancelled: Cancelled | None = None,
) -> None:
    """image_clone(): name lock, EEXIST, then snapshot/copy by type into the pool; side files after."""
    if pool is None:
        pool = str(paths.current().pool)
        os.makedirs(pool, mode=0o700, exist_ok=True)  # a user's pool may not exist yet
    try:
        with image_name_lock(new_name):
            if find(new_name, search_paths) is not None:
                raise from_errno(errno.EEXIST)
            if image.type in (ImageType.DIRECTORY, ImageType.SUBVOLUME):
                target = os.path.join(pool, new_name)
                _clone_tree(image, target, read_only, cancelled)
                try:  # a subtree qgroup for the copy (252; nothing where quota is off or not btrfs)
                    btrfs.auto_qgroup_path(target)
                except OSError:
                    pass
            elif image.type is ImageType.RAW:
                _clone_raw(image, os.path.join(pool, f"{new_name}.raw"), read_only, cancelled)
            else:
                raise from_errno(errno.EOPNOTSUPP)
    except OSError as exc:
        raise _errno_of(exc) from None
    for (old_dir, old_file), (_d, new_file) in zip(
        _side_files(image, image.name), _side_files(image, new_name), strict=True
    ):
        _copy_side_file(os.path.join(old_dir, old_file), os.path.join(old_dir, new_file))


def _copy_side_file(source: str, target: str) -> None:
    try:
        with open(source, "rb") as src, open(target, "xb") as dst:
            os.fchmod(dst.fileno(), 0o664)
            copy_file_data(src.fileno(), dst.fileno())
    except OSError:
        pass


def mark_read_only(image: Image, read_only: bool) -> None:
    """image_read_only(): EROFS for vendor/host, exclusive path lock, then by type."""
    _refuse_vendor_or_host(image)
    try:
        with image_path_lock(image.path, exclusive=True):
            if image.type is ImageType.SUBVOLUME:
                fsinfo.set_subvolume_read_only(image.path, read_only)
            elif image.type is ImageType.DIRECTORY:
                fsinfo.set_immutable(image.path, read_only)
            elif image.type is ImageType.RAW:
                mode = os.stat(image.path).st_mode & 0o444
                os.chmod(image.path, mode if read_only else mode | 0o200)
            elif image.type is ImageType.BLOCK:
                fsinfo.set_block_device_read_only(image.path, read_only)
            else:
                raise from_errno(errno.EOPNOTSUPP)
    except OSError as exc:
        raise _errno_of(exc) from None
    image.read_only = read_only


def limit_in_range(limit: int) -> bool:
    return limit <= LIMIT_MAX or limit == UINT64_MAX


def set_limit(image: Image, limit: int) -> None:
    """image_set_limit(): EROFS for vendor/host, EOPNOTSUPP unless a subvolume; else its qgroup limit."""
    _refuse_vendor_or_host(image)
    if image.type is not ImageType.SUBVOLUME:
        raise from_errno(errno.EOPNOTSUPP)
    try:
        fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _errno_of(exc) from None
    try:
        # the subvolume's own qgroup (errors ignored), a subtree qgroup (errors ignored), then its limit
        try:
            btrfs.set_limit(fd, 0, limit)
        except OSError:
            pass
        try:
            btrfs.auto_qgroup(fd, 0, True)
        except OSError:
            pass
        btrfs.set_subtree_limit(fd, limit)
    except OSError as exc:
        raise _errno_of(exc) from None
    finally:
        os.close(fd)


def _setup_pool(pool: str) -> None:
    """setup_machine_directory(): on btrfs make the pool a subvolume, enable quota, give it a subtree qgroup."""
    probe = pool if os.path.exists(pool) else os.path.dirname(pool)
    try:
        on_btrfs = fsinfo.fs_type_of(probe) == fsinfo.BTRFS_SUPER_MAGIC
    except OSError as exc:
        raise from_errno(
            exc.errno or errno.EIO, f"Failed to determine whether {pool} is located on btrfs: %m"
        ) from None
    if not on_btrfs:
        return
    if not os.path.exists(pool):
        try:
            btrfs.create_subvolume(pool)
        except OSError:
            pass
    try:
        fd = os.open(pool, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        for step in (btrfs.enable_quota, lambda f: btrfs.auto_qgroup(f, 0, True)):
            try:  # 252 logs a warning and goes on
                step(fd)
            except OSError:
                pass
    finally:
        os.close(fd)


def set_pool_limit(limit: int, pool: str | None = None) -> None:
    """SetPoolLimit after the range check: set up the pool, then its qgroup's and its subtree qgroup's limit."""
    if pool is None:
        pool = str(paths.current().pool)
    _setup_pool(pool)
    try:
        fd = os.open(pool, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO, "Failed to adjust quota limit: %m") from None
    try:
        try:
            btrfs.set_limit(fd, 0, limit)
        except OSError:
            pass
        btrfs.set_subtree_limit(fd, limit)
    except OSError as exc:
        if exc.errno == errno.ENOTTY:
            raise not_supported("Quota is only supported on btrfs.") from None
        raise from_errno(exc.errno or errno.EIO, "Failed to adjust quota limit: %m") from None
    finally:
        os.close(fd)


def clean_pool(mode: str, search_paths: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """CleanPool's worker: remove all (or all hidden) non-vendor, non-host images; busy ones stay."""
    removed: list[tuple[str, int]] = []
    for image in discover(search_paths).values():
        if image.is_vendor or image.is_host:
            continue
        if mode == "hidden" and not image.is_hidden:
            continue
        try:
            remove(image)
        except MachineError as exc:
            if exc.errno == errno.EBUSY:
                continue
            raise from_errno(exc.errno, f"Failed to remove image {image.name}: %m") from None
        removed.append((image.name, image.usage_exclusive))
    return removed
