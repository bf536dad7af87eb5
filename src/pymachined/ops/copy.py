"""Copying files between the host and a container: CopyFromMachine, CopyToMachine and their …WithFlags.

Unlike 252, which forks a worker that joins the leader's mount namespace, pymachined copies in the calling
thread with file descriptors only, no fork: the container side is reached through /proc/<leader>/root with
openat2(RESOLVE_IN_ROOT), and the tree is walked with *at() calls that never follow a symlink, so nothing
outside the container's root is ever read or written on its behalf.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..errors import from_errno, invalid_args, not_supported
from ..machine import Machine, MachineClass
from .os_release import open_in_root

MACHINE_COPY_REPLACE: Final = 1
COPY_FLAGS_MASK: Final = MACHINE_COPY_REPLACE

# 252's COPY_DEPTH_MAX. 252 itself decrements an unsigned counter twice per level, so it wraps and never stops;
# the limit is kept here as the safety net it was meant to be (bind mount cycles).
COPY_DEPTH_MAX: Final = 2048
NAME_MAX: Final = 255
PATH_MAX: Final = 4096

_FICLONE: Final = 0x40049409
_CHUNK: Final = 1 << 30
_OPENAT2_RETRIES: Final = 16
_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW
# copy_file_range() errors after which plain read()/write() still works
_NO_COPY_FILE_RANGE: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBADF, errno.EOPNOTSUPP})


def validate_copy_request(machine: Machine, source: str, destination: str, flags: int) -> tuple[str, str]:
    """B.9 steps 2-5 in 252's order; the destination defaults to the source. Returns (source, destination)."""
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("Copying files is only supported on container machines.")
    if flags & ~COPY_FLAGS_MASK:
        raise from_errno(errno.EINVAL)
    if not source.startswith("/"):
        raise invalid_args("Source path must be absolute.")
    if not destination:
        destination = source
    elif not destination.startswith("/"):
        raise invalid_args("Destination path must be absolute.")
    return source, destination


def split_file_name(path: str) -> tuple[str, str]:
    """(parent, file name) of `path` as 252's path_extract_directory()/path_extract_filename() see it.

    Raises OSError: EADDRNOTAVAIL when there is no file name (`/`, `/.`), EINVAL for a final `..` or a
    component or path that is too long. `.` components and trailing slashes are skipped; the parent is the
    text before the last component, left for the kernel to resolve.
    """
    if not path or len(os.fsencode(path)) >= PATH_MAX:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    last: tuple[int, str] | None = None
    offset = 0
    for component in path.split("/"):
        if len(os.fsencode(component)) > NAME_MAX:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if component not in ("", "."):
            last = (offset, component)
        offset += len(component) + 1
    if last is None:
        raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
    start, name = last
    if name == "..":
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return path[:start] or ".", name


def _file_name(path: str) -> tuple[str, str]:
    try:
        return split_file_name(path)
    except OSError as exc:
        raise from_errno(exc.errno or errno.EINVAL, f"Failed to extract file name of '{path}' path: %m") from None


def _open_container_directory(leader: int, path: str) -> int:
    """The directory `path` inside the leader's root; symlinks and `..` resolve within that root."""
    try:
        root_fd = os.open(f"/proc/{leader}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise from_errno(exc.errno or errno.ESRCH) from None
    try:
        for _ in range(_OPENAT2_RETRIES):
            try:
                return open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except BlockingIOError:
                continue  # a rename or mount raced with the lookup (EAGAIN): look again
            except OSError as exc:
                raise from_errno(exc.errno or errno.EIO) from None
        raise from_errno(errno.EAGAIN)
    finally:
        os.close(root_fd)


def copy_between(
    machine: Machine, container_path: str, host_path: str, to_container: bool, replace: bool, uid_shift: int
) -> None:
    """B.9 steps 9-11 and the copy itself; blocking. Raises MachineError with 252's names and texts."""
    host_parent, host_name = _file_name(host_path)
    container_parent, container_name = _file_name(container_path)
    try:
        host_fd = os.open(host_parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO, f"Failed to open host directory {host_path}: %m") from None
    try:
        container_fd = _open_container_directory(machine.leader, container_parent)
        try:
            if to_container:
                # shifted: everything becomes root of the container
                owner = uid_shift if uid_shift else None
                err = copy_tree_at(host_fd, host_name, container_fd, container_name, owner, replace)
            else:
                owner = 0 if uid_shift else None
                err = copy_tree_at(container_fd, container_name, host_fd, host_name, owner, replace)
        finally:
            os.close(container_fd)
    finally:
        os.close(host_fd)
    if err:
        raise from_errno(err)


def copy_tree_at(
    source_dir_fd: int,
    source_name: str,
    target_dir_fd: int,
    target_name: str,
    owner: int | None,
    replace: bool,
    cancelled: Callable[[], bool] | None = None,
    all_xattrs: bool = False,
) -> int:
    """Copy one entry (a whole tree for a directory) as 252's copy_tree_at() with REFLINK|MERGE|HARDLINKS.

    `owner` overrides UID and GID of everything created (None keeps the source's). `all_xattrs` copies
    every extended attribute (ACLs, capabilities, SELinux labels: image clones), not only `user.*`.
    Returns 0 or the errno 252 would report: the last failure met, the walk going on past failures.
    """
    try:
        st = os.stat(source_name, dir_fd=source_dir_fd, follow_symlinks=False)
    except OSError as exc:
        return exc.errno or errno.EIO
    copier = _TreeCopy(owner, replace, target_dir_fd, cancelled, all_xattrs)
    return copier.run(source_dir_fd, source_name, st, target_name)


def copy_file_data(src_fd: int, dst_fd: int) -> None:
    """Contents only: FICLONE (reflink) where the file system can, else copy_file_range(), else read()/write()."""
    try:
        if os.lseek(src_fd, 0, os.SEEK_CUR) == 0 and os.lseek(dst_fd, 0, os.SEEK_CUR) == 0:
            fcntl.ioctl(dst_fd, _FICLONE, src_fd)
            end = os.lseek(src_fd, 0, os.SEEK_END)
            os.lseek(dst_fd, end, os.SEEK_SET)
            return
    except OSError:
        pass  # not seekable, or no reflinks here: copy the bytes
    copied = False
    while True:
        try:
            n = os.copy_file_range(src_fd, dst_fd, _CHUNK)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            break
        if n == 0:
            if copied:
                return
            break  # empty, or a file system (procfs, sysfs) where the call reads nothing: read() decides
        copied = True
    while data := os.read(src_fd, 1 << 17):
        view = memoryview(data)
        while view:
            view = view[os.write(dst_fd, view) :]


@dataclass(slots=True)
class _Directory:
    """A directory being copied: both ends open, the names still to do, the last failure."""

    source_fd: int
    target_fd: int
    st: os.stat_result
    created: bool
    depth_left: int
    path: tuple[str, ...]  # from the top target directory's parent, for hardlinks
    names: list[str]
    error: int = 0


@dataclass(slots=True)
class _TreeCopy:
    """One copy operation: the ownership override, replace, and the hardlinks made so far."""

    owner: int | None
    replace: bool
    base_fd: int  # the top target's parent, where hardlink paths start
    cancelled: Callable[[], bool] | None = None  # polled per entry: ECANCELED once it says so
    all_xattrs: bool = False
    hardlinks: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)
    stack: list[_Directory] = field(default_factory=list)

    def run(self, source_dir_fd: int, source_name: str, st: os.stat_result, target_name: str) -> int:
        result = self._copy(source_dir_fd, source_name, st, self.base_fd, target_name, (target_name,), COPY_DEPTH_MAX)
        try:
            while self.stack:
                if self.cancelled is not None and self.cancelled():
                    return errno.ECANCELED
                directory = self.stack[-1]
                if directory.names:
                    name = directory.names.pop()
                    try:
                        child = os.stat(name, dir_fd=directory.source_fd, follow_symlinks=False)
                    except OSError as exc:
                        directory.error = exc.errno or errno.EIO
                        continue
                    q = self._copy(
                        directory.source_fd,
                        name,
                        child,
                        directory.target_fd,
                        name,
                        (*directory.path, name),
                        directory.depth_left - 1,
                    )
                else:
                    self.stack.pop()
                    q = self._finish(directory)
                    if not self.stack:
                        result = q
                        continue
                # merge: an entry that already exists is kept
                if q and q != errno.EEXIST:
                    self.stack[-1].error = q
        finally:
            for directory in self.stack:
                os.close(directory.source_fd)
                os.close(directory.target_fd)
        return result

    def _uid_gid(self, st: os.stat_result) -> tuple[int, int]:
        return (st.st_uid, st.st_gid) if self.owner is None else (self.owner, self.owner)

    def _restore_inode(self, target: int | str, st: os.stat_result) -> int:
        """Owner, mode (after chown, which drops set-ID bits) and times of a copy, by fd or by path.

        The errno of the last failed chown/chmod, 0 if none; a failed utime does not count.
        """
        r = 0
        try:
            os.chown(target, *self._uid_gid(st))
        except OSError as exc:
            r = exc.errno or errno.EIO
        try:
            os.chmod(target, st.st_mode & 0o7777)
        except OSError as exc:
            r = exc.errno or errno.EIO
        try:
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
        return r

    def _copy(
        self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str, path: tuple[str, ...], depth: int
    ) -> int:
        if stat.S_ISDIR(st.st_mode):
            return self._enter(sfd, sname, st, tfd, tname, path, depth)
        r = self._leaf(sfd, sname, st, tfd, tname, path)
        if r == errno.EEXIST and self.replace:
            try:
                os.unlink(tname, dir_fd=tfd)
            except OSError:
                return r
            r = self._leaf(sfd, sname, st, tfd, tname, path)
        return r

    def _enter(
        self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str, path: tuple[str, ...], depth: int
    ) -> int:
        """Open both ends of a directory (creating or merging the target) and queue its entries."""
        if depth == 0:
            return errno.ENAMETOOLONG
        source_fd = target_fd = -1
        try:
            source_fd = os.open(sname, _DIRECTORY_FLAGS, dir_fd=sfd)
            try:
                os.mkdir(tname, st.st_mode & 0o7777, dir_fd=tfd)
                created = True
            except FileExistsError:
                created = False
            target_fd = os.open(tname, _DIRECTORY_FLAGS, dir_fd=tfd)
            names = os.listdir(source_fd)
        except OSError as exc:
            for fd in (source_fd, target_fd):
                if fd >= 0:
                    os.close(fd)
            return exc.errno or errno.EIO
        names.reverse()
        self.stack.append(_Directory(source_fd, target_fd, st, created, depth, path, names))
        return 0

    def _finish(self, directory: _Directory) -> int:
        """Owner, mode, xattrs and times of a directory we created, once its entries are in; a merged one keeps its."""
        r = directory.error
        st = directory.st
        try:
            if directory.created:
                r = self._restore_inode(directory.target_fd, st) or r
                _copy_xattrs(directory.source_fd, directory.target_fd, self.all_xattrs)
        finally:
            os.close(directory.source_fd)
            os.close(directory.target_fd)
        return r

    def _leaf(self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str, path: tuple[str, ...]) -> int:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            return self._symlink(sfd, sname, st, tfd, tname)
        if stat.S_ISREG(mode):
            make = self._regular
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            make = self._node
        else:
            return errno.EOPNOTSUPP
        if self._try_hardlink(st, tfd, tname):
            return 0
        r, made = make(sfd, sname, st, tfd, tname)
        if made:
            self._memorize(st, path)
        return r

    def _regular(self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str) -> tuple[int, bool]:
        try:
            # O_NONBLOCK: a fifo swapped in after the stat must not hang the copy
            source_fd = os.open(
                sname, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=sfd
            )
        except OSError as exc:
            return exc.errno or errno.EIO, False
        try:
            if not stat.S_ISREG(os.fstat(source_fd).st_mode):
                return errno.EBADFD, False
            try:
                target_fd = os.open(
                    tname,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW,
                    st.st_mode & 0o7777,
                    dir_fd=tfd,
                )
            except OSError as exc:
                return exc.errno or errno.EIO, False
            try:
                copy_file_data(source_fd, target_fd)
            except OSError as exc:
                os.close(target_fd)
                _unlink_quietly(tfd, tname)
                return exc.errno or errno.EIO, False
            r = self._restore_inode(target_fd, st)
            _copy_xattrs(source_fd, target_fd, self.all_xattrs)
            try:
                os.close(target_fd)
            except OSError as exc:
                _unlink_quietly(tfd, tname)
                return exc.errno or errno.EIO, False
            return r, True
        finally:
            os.close(source_fd)

    def _symlink(self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str) -> int:
        try:
            target = os.readlink(sname, dir_fd=sfd)
            os.symlink(target, tname, dir_fd=tfd)
        except OSError as exc:
            return exc.errno or errno.EIO
        r = 0
        try:
            os.chown(tname, *self._uid_gid(st), dir_fd=tfd, follow_symlinks=False)
        except OSError as exc:
            r = exc.errno or errno.EIO
        try:
            os.utime(tname, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=tfd, follow_symlinks=False)
        except OSError:
            pass
        return r

    def _node(self, sfd: int, sname: str, st: os.stat_result, tfd: int, tname: str) -> tuple[int, bool]:
        """A fifo, device node or socket, made with mknod as 252 does."""
        try:
            if stat.S_ISFIFO(st.st_mode):
                os.mkfifo(tname, st.st_mode & 0o7777, dir_fd=tfd)
            else:
                os.mknod(tname, st.st_mode, st.st_rdev, dir_fd=tfd)
        except OSError as exc:
            return exc.errno or errno.EIO, False
        # metadata through an O_PATH fd of what we made: a symlink swapped in must not redirect chmod
        try:
            node_fd = os.open(tname, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tfd)
        except OSError as exc:
            return exc.errno or errno.EIO, True
        try:
            if stat.S_IFMT(os.fstat(node_fd).st_mode) != stat.S_IFMT(st.st_mode):
                return errno.EBADFD, False
            return self._restore_inode(f"/proc/self/fd/{node_fd}", st), True
        finally:
            os.close(node_fd)

    def _try_hardlink(self, st: os.stat_result, tfd: int, tname: str) -> bool:
        """Link to the copy of an inode met before in this tree (252's COPY_HARDLINKS)."""
        if st.st_nlink <= 1:
            return False
        path = self.hardlinks.get((st.st_dev, st.st_ino))
        if path is None:
            return False
        parent_fd = self._open_created_parent(path)
        if parent_fd < 0:
            return False
        try:
            os.link(path[-1], tname, src_dir_fd=parent_fd, dst_dir_fd=tfd, follow_symlinks=False)
        except OSError:
            return False
        finally:
            if parent_fd != self.base_fd:
                os.close(parent_fd)
        return True

    def _open_created_parent(self, path: tuple[str, ...]) -> int:
        """The directory holding `path`, reached from the base without following symlinks; -1 if it is gone."""
        fd = self.base_fd
        try:
            for component in path[:-1]:
                next_fd = os.open(component, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                if fd != self.base_fd:
                    os.close(fd)
                fd = next_fd
        except OSError:
            if fd != self.base_fd:
                os.close(fd)
            return -1
        return fd

    def _memorize(self, st: os.stat_result, path: tuple[str, ...]) -> None:
        if st.st_nlink > 1 and len(self.stack) > 0:
            self.hardlinks.setdefault((st.st_dev, st.st_ino), path)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _copy_xattrs(source_fd: int, target_fd: int, all_xattrs: bool) -> None:
    """`user.*` attributes (as 252 copies without COPY_ALL_XATTRS), or all of them; failures are ignored."""
    try:
        names = os.listxattr(source_fd)
    except OSError:
        return
    for name in names:
        if not all_xattrs and not name.startswith("user."):
            continue
        try:
            value = os.getxattr(source_fd, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue  # gone meanwhile
            return
        try:
            os.setxattr(target_fd, name, value)
        except OSError:
            pass
