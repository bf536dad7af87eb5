"""Work done inside a machine's namespaces by a forked helper (252's namespace_fork).

Why a fork: setns(CLONE_NEWNS) and setns(CLONE_NEWUSER) fail with EINVAL in a process with more
than one thread (the root, cwd and credentials are shared by all threads), and pymachined runs an
event loop plus worker threads. So the calling thread forks; the child has one thread and may
enter the namespaces, chroot into the leader's root, do its work and hand back bytes and file
descriptors over a SOCK_SEQPACKET socketpair (SCM_RIGHTS).

What the child may do: fork() copies only the calling thread. A lock another thread held at that
moment (a logging handler's, a buffered stream's, a bus connection's, the dynamic loader's while a
ctypes symbol is looked up for the first time) stays locked forever in the child. The child
therefore runs only code from modules imported before the fork, calls only libc symbols resolved
at import time (as `_setns` below; callers do the same for theirs), writes nothing to logging or
stdio, and leaves with os._exit(): no atexit handlers, no flushing of stdio buffers copied from
the parent, no finalizers of the parent's objects. The parent's thread blocks until the helper
has been reaped: call this from a worker thread, never from the event loop.

When the leader lives in another PID namespace, the child enters it and forks once more, as 252
does, so that the work runs as a member of that namespace (its /proc/self is the container's).
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import errno
import gc
import os
import signal
import socket
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from ..libc import libc as _libc
from .namespaces import CLONE_NEWNS, CLONE_NEWUSER

CLONE_NEWPID: Final = 0x20000000
PR_SET_PDEATHSIG: Final = 1

# Python ≥ 3.12 warns on every fork() in a threaded process; this module forks knowing it (see above).
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning)

# Resolved here, in the parent: the child must not look up symbols (see the module docstring).
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int

MAX_PAYLOAD: Final = 64 * 1024
MAX_FDS: Final = 16
_TAG_RESULT: Final = b"R"
_TAG_ERRNO: Final = b"E"
_EXIT_WORK_FAILED: Final = 1
_EXIT_BROKEN: Final = 2
_FD_SIZE: Final = array.array("i").itemsize

Work = Callable[[], tuple[bytes, Sequence[int]]]
"""What the helper runs once inside: it returns bytes and fds to hand back, or raises OSError."""


class HelperFailed(Exception):
    """The helper ended without reporting an errno: killed, or broken before it could say why."""


class HelperError(OSError):
    """The OSError the helper's work raised inside the namespaces, with its errno."""


@dataclass(frozen=True, slots=True)
class _Namespaces:
    """Descriptors the helper needs, opened by the parent (where failures can still be reported)."""

    root: int
    mount: int
    pid: int = -1  # only when the leader's PID namespace is not ours
    user: int = -1  # only when asked for and the leader's user namespace is not ours

    def close(self) -> None:
        for fd in (self.root, self.mount, self.pid, self.user):
            if fd >= 0:
                os.close(fd)


def shares_namespace(leader: int, kind: str) -> bool:
    """Whether `leader` is in the same namespace of `kind` ("mnt", "pid", "user", …) as pymachined."""
    theirs = os.stat(f"/proc/{leader}/ns/{kind}")
    ours = os.stat(f"/proc/self/ns/{kind}")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _open_namespace(leader: int, kind: str, only_if_different: bool) -> int:
    fd = os.open(f"/proc/{leader}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    if only_if_different:
        theirs = os.fstat(fd)
        ours = os.stat(f"/proc/self/ns/{kind}")
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            os.close(fd)
            return -1
    return fd


def _open_namespaces(leader: int, pid: bool, user: bool) -> _Namespaces:
    fds: list[int] = []
    try:
        fds.append(_open_namespace(leader, "mnt", only_if_different=False))
        fds.append(_open_namespace(leader, "pid", only_if_different=True) if pid else -1)
        fds.append(_open_namespace(leader, "user", only_if_different=True) if user else -1)
        root = os.open(f"/proc/{leader}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        raise
    return _Namespaces(root=root, mount=fds[0], pid=fds[1], user=fds[2])


def _verify_leader(leader: int, pidfd: int) -> None:
    """ESRCH unless `pidfd` still refers to `leader` (the PID was not recycled while we opened its files)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:") and int(line.split()[1]) == leader:
                    return
    except OSError:
        pass
    raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))


def run_in_namespaces(
    leader: int, work: Work, *, pidfd: int = -1, pid: bool = True, user: bool = False
) -> tuple[bytes, list[int]]:
    """Run `work` in a helper that joined `leader`'s mount namespace (and its PID namespace when `pid`,
    its user namespace when `user`; each only when it is not pymachined's own) and chrooted into its root.

    Returns what `work` returned; the fds are new descriptors (O_CLOEXEC) owned by the caller.
    Raises OSError when the parent's preparation fails (opening the leader's namespaces: ENOENT once
    it is gone), HelperError with the errno of an OSError `work` raised, HelperFailed when the helper
    could not enter the namespaces or ended otherwise.
    """
    namespaces = _open_namespaces(leader, pid=pid, user=user)
    try:
        if pidfd >= 0:
            _verify_leader(leader, pidfd)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours, theirs:
            parent = os.getpid()
            child = os.fork()
            if child == 0:  # pragma: no cover - runs in the helper, reported through `ours`
                _helper(parent, namespaces, theirs, work)
            theirs.close()
            try:
                message = _receive(ours)
            finally:
                status = os.waitpid(child, 0)[1]
    finally:
        namespaces.close()
    return _outcome(message, status)


def _outcome(message: tuple[bytes, list[int]] | None, status: int) -> tuple[bytes, list[int]]:
    if message is not None:
        data, fds = message
        if data[:1] == _TAG_RESULT and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return data[1:], fds
        for fd in fds:
            os.close(fd)
        if data[:1] == _TAG_ERRNO and len(data) == 5:
            err = struct.unpack("=i", data[1:])[0]
            raise HelperError(err, os.strerror(err))
    if os.WIFSIGNALED(status):
        raise HelperFailed(f"helper killed by signal {os.WTERMSIG(status)}")
    raise HelperFailed(f"helper exited with status {os.waitstatus_to_exitcode(status)} without a result")


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """The helper's one message, or None at EOF."""
    data, ancillary, flags, _ = sock.recvmsg(
        MAX_PAYLOAD + 1, socket.CMSG_SPACE(MAX_FDS * _FD_SIZE), socket.MSG_CMSG_CLOEXEC
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
    received = list(fds)
    if not data:
        for fd in received:
            os.close(fd)
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in received:
            os.close(fd)
        raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
    return data, received


# The helper. Everything below runs in the forked child: see the module docstring for the rules.


def _helper(parent: int, namespaces: _Namespaces, sock: socket.socket, work: Work) -> None:  # pragma: no cover
    code = _EXIT_BROKEN
    try:
        gc.disable()  # no finalizers of the parent's objects at unpredictable points
        _reset_signals(parent)
        if not _enter(namespaces):
            return
        if namespaces.pid >= 0:
            # setns(CLONE_NEWPID) moves only our future children into the namespace
            inner = os.fork()
            if inner == 0:
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                code = _run(sock, work)
                return
            status = os.waitpid(inner, 0)[1]
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else _EXIT_BROKEN
            return
        code = _run(sock, work)
    except BaseException:
        code = _EXIT_BROKEN
    finally:
        os._exit(code)


def _reset_signals(parent: int) -> None:  # pragma: no cover
    """Default dispositions, no wake-up fd of the parent's event loop, and die with the parent's thread."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: Python then never wrote to it from here either
        pass
    for signum in signal.valid_signals():
        handler = signal.getsignal(signum)
        if callable(handler) or handler is signal.SIG_IGN:
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(_EXIT_BROKEN)


def _enter(namespaces: _Namespaces) -> bool:  # pragma: no cover
    """252's namespace_enter(): pid, mount, then user namespace; chroot into the leader's root."""
    joins = ((namespaces.pid, CLONE_NEWPID), (namespaces.mount, CLONE_NEWNS), (namespaces.user, CLONE_NEWUSER))
    for fd, nstype in joins:
        if fd >= 0 and _setns(fd, nstype) != 0:
            return False
    try:
        os.fchdir(namespaces.root)
        os.chroot(".")
        if namespaces.user >= 0:
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
    except OSError:
        return False
    return True


def _run(sock: socket.socket, work: Work) -> int:  # pragma: no cover
    try:
        data, fds = work()
    except OSError as exc:
        sock.sendmsg([_TAG_ERRNO + struct.pack("=i", exc.errno or errno.EIO)])
        return _EXIT_WORK_FAILED
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([_TAG_RESULT + data], ancillary)
    return 0
