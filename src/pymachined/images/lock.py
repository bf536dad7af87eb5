"""Image locks shared with systemd-nspawn (A.7): OFD record locks on lock files, EBUSY when taken."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Final

from . import paths
from .discovery import image_name_is_valid
from .image import HOST_IMAGE

_F_RDLCK: Final = 0
_F_WRLCK: Final = 1
_F_UNLCK: Final = 2


def _flock_struct(kind: int) -> bytes:
    # struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (0 for OFD locks)
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)


def _locking_disabled() -> bool:
    value = os.environ.get("SYSTEMD_NSPAWN_LOCK")
    return value is not None and value.strip().lower() in ("0", "no", "n", "false", "f", "off")


@dataclass(slots=True)
class LockFile:
    """One held lock file (make_lock_file): unlinked by whoever ends up holding it exclusively."""

    path: str
    fd: int
    exclusive: bool

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            if not self.exclusive:
                try:
                    fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _flock_struct(_F_WRLCK))
                    self.exclusive = True
                except OSError:
                    pass
            if self.exclusive:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
        finally:
            os.close(self.fd)
            self.fd = -1


def make_lock_file(path: str, exclusive: bool) -> LockFile:
    """Open or create `path` and take an OFD lock without blocking; OSError(EBUSY) if held by someone else."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY, 0o600)
        try:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_struct(_F_WRLCK if exclusive else _F_RDLCK))
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                elif exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path) from None
                else:
                    raise
            if os.fstat(fd).st_nlink > 0:
                return LockFile(path, fd, exclusive)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # unlinked under us by the previous holder: try again


@dataclass(slots=True)
class ImageLock:
    """The locks image_path_lock() or image_name_lock() took; release() drops them all."""

    files: list[LockFile] = field(default_factory=list)

    def release(self) -> None:
        while self.files:
            self.files.pop().release()

    def __enter__(self) -> ImageLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _lock_dir() -> str:
    """/run/systemd/nspawn/locks (as nspawn), or the per-user instance's own under $XDG_RUNTIME_DIR."""
    lock_dir = paths.current().lock_dir
    os.makedirs(os.path.dirname(lock_dir), mode=0o755, exist_ok=True)
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    return lock_dir


def image_path_lock(path: str, exclusive: bool) -> ImageLock:
    """Local `<dir>/.#<base>.lck` and global `…/locks/inode-<dev>:<ino>` locks, non-blocking (EBUSY)."""
    lock = ImageLock()
    if _locking_disabled():
        return lock
    if path == "/":
        if exclusive:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        return lock
    global_name: str | None = None
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None:
        if stat.S_ISBLK(st.st_mode):
            global_name = f"block-{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            global_name = f"inode-{st.st_dev}:{st.st_ino}"
        else:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY), path)
    try:
        if not path.startswith("/dev/"):
            directory, base = os.path.split(path)
            try:
                lock.files.append(make_lock_file(os.path.join(directory, f".#{base}.lck"), exclusive))
            except OSError as exc:
                if exc.errno != errno.EROFS or exclusive:
                    raise
        if global_name is not None:
            lock.files.append(make_lock_file(os.path.join(_lock_dir(), global_name), exclusive))
    except BaseException:
        lock.release()
        raise
    return lock


def image_name_lock(name: str) -> ImageLock:
    """The exclusive lock on a name a clone or rename is about to create (`…/locks/name-<name>`)."""
    lock = ImageLock()
    if not image_name_is_valid(name):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), name)
    if _locking_disabled():
        return lock
    if name == HOST_IMAGE:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), name)
    lock.files.append(make_lock_file(os.path.join(_lock_dir(), f"name-{name}"), True))
    return lock
