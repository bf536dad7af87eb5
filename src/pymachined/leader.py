"""Leader processes pinned by pidfd: identity that survives PID reuse, and exit notification."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from .libc import libc as _libc

log = logging.getLogger(__name__)


PIDFS_MAGIC = 0x50494446


def pidfd_id(pidfd: int) -> int:
    """The pidfs inode number of a pidfd: unique for the boot (0 where the kernel has no pidfs)."""
    # Before pidfs (Linux 6.9) every pidfd shares one anonymous inode, which identifies nothing.
    return os.fstat(pidfd).st_ino if _on_pidfs(pidfd) else 0


_pidfs: bool | None = None  # whether pidfds live on pidfs: a property of the running kernel


def _on_pidfs(pidfd: int) -> bool:
    global _pidfs
    if _pidfs is None:
        buf = ctypes.create_string_buffer(256)
        if _libc.fstatfs(pidfd, buf) != 0:
            return False
        _pidfs = int.from_bytes(buf.raw[:8], "little") == PIDFS_MAGIC
    return _pidfs


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the comm field may contain spaces and parentheses: split after the last ")"
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited already
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] != b"Z"
    except OSError:
        return False


@dataclass(slots=True)
class PidRef:
    """A process, pinned: its PID plus a pidfd once it could be opened."""

    pid: int
    fd: int = -1
    fd_id: int = 0

    @classmethod
    def pin(cls, pid: int) -> PidRef:
        """Pin `pid`; ESRCH if it does not exist (or cannot be a PID: a D-Bus u reaches 2^32-1)."""
        if not 0 < pid < 2**31:
            raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
        fd = os.pidfd_open(pid)
        return cls(pid, fd, pidfd_id(fd))

    @classmethod
    def from_pidfd(cls, fd: int) -> PidRef:
        """Adopt a pidfd received from a client (the fd is duplicated)."""
        own = os.dup(fd)
        pid = pid_of_pidfd(own)
        return cls(pid, own, pidfd_id(own))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def send_signal(self, signum: int) -> None:
        if self.fd >= 0:
            signal.pidfd_send_signal(self.fd, signum)
        else:
            os.kill(self.pid, signum)


def pid_of_pidfd(fd: int) -> int:
    """The PID a pidfd refers to, from the Pid: line of its fdinfo (-1 once exited)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid <= 0:
                    raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
                return pid
    raise OSError(errno.EBADF, "not a pidfd")


@dataclass
class LeaderWatch:
    """Calls back once when a pinned process exits, from the event loop, without polling."""

    loop: asyncio.AbstractEventLoop
    watched: dict[int, Callable[[], None]] = field(default_factory=dict)

    def watch(self, ref: PidRef, on_exit: Callable[[], None]) -> None:
        if ref.fd < 0:
            return
        self.unwatch(ref)
        self.watched[ref.fd] = on_exit
        self.loop.add_reader(ref.fd, self._fire, ref.fd)

    def unwatch(self, ref: PidRef) -> None:
        if ref.fd >= 0 and self.watched.pop(ref.fd, None) is not None:
            self.loop.remove_reader(ref.fd)

    def _fire(self, fd: int) -> None:
        callback = self.watched.pop(fd, None)
        self.loop.remove_reader(fd)
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("Failed to handle the exit of a leader")
