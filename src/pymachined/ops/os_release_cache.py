"""os-release of machines, kept until anything it was read through changes.

An entry is kept per (mount namespace, root directory) of a leader, so the machines of one tree share
it. It is dropped when inotify reports a change to the names `etc` and `usr` in the root, `os-release`
in `etc` and in `usr/lib`, `lib` in `usr`, or to the file read; when the mount table of the namespace
changes (/proc/PID/mountinfo polls readable); or, as the key says, when the leader's mount namespace
or root is another one. A lookup reads the inotify descriptor, polls the mount table and reads two
/proc links: it never walks the machine's file system, so a file system hanging inside a container
cannot stall the daemon. Filling an entry does walk it, and belongs in a worker thread.

Trees that cannot be watched completely (`etc`, `usr` or `usr/lib` a symbolic link, `etc/os-release`
a link to anywhere but `usr/lib/os-release`, inotify out of watches) are read every time.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from dataclasses import dataclass, field
from typing import Final

from asyncinotify import Inotify, Mask, Watch

from .os_release import (
    OS_RELEASE_PATHS,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    open_in_root,
    read_os_release_fd,
    read_os_release_in_root,
)
from .sharing import Sharing

IN_MODIFY: Final = 0x2
IN_ATTRIB: Final = 0x4
IN_CLOSE_WRITE: Final = 0x8
IN_MOVED_FROM: Final = 0x40
IN_MOVED_TO: Final = 0x80
IN_CREATE: Final = 0x100
IN_DELETE: Final = 0x200
IN_DELETE_SELF: Final = 0x400
IN_MOVE_SELF: Final = 0x800
IN_UNMOUNT: Final = 0x2000
IN_Q_OVERFLOW: Final = 0x4000
IN_IGNORED: Final = 0x8000
IN_ONLYDIR: Final = 0x01000000
SELF_EVENTS: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
DIR_MASK: Final = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
FILE_MASK: Final = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF

# the directories a lookup of etc/os-release or usr/lib/os-release passes, and the names in each that matter
WATCHED_DIRS: Final = (
    (".", frozenset({"etc", "usr"})),
    ("etc", frozenset({"os-release"})),
    ("usr", frozenset({"lib"})),
    ("usr/lib", frozenset({"os-release"})),
)
LINKS_INTO_USR_LIB: Final = frozenset({"../usr/lib/os-release", "/usr/lib/os-release"})

Key = tuple[str, str]  # readlink of /proc/PID/ns/mnt and of /proc/PID/root


class Uncacheable(Exception):
    """The tree cannot be watched completely: read it every time."""


@dataclass(eq=False, slots=True)
class _MountTable:
    fd: int
    poller: select.poll
    users: int = 0

    @classmethod
    def open(cls, pid: int) -> _MountTable:
        fd = os.open(f"/proc/{pid}/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        return cls(fd, poller)

    def changed(self) -> bool:
        """Whether a mount or unmount happened since the last call (the kernel reports each change once)."""
        return bool(self.poller.poll(0))


@dataclass(eq=False, slots=True)
class _Entry:
    key: Key
    watches: dict[int, frozenset[str] | None] = field(default_factory=dict)  # wd → names that matter (None: all)
    fields: dict[str, str] | None = None  # None while being filled
    stale: bool = False


class OsReleaseCache:
    """Parsed os-release per (mount namespace, root), with the watches that tell when it is stale."""

    def __init__(self) -> None:
        try:
            self._inotify: Inotify | None = Inotify(sync_timeout=0)  # sync_get(): what is queued, never waits
        except OSError:
            self._inotify = None
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._watches: dict[int, Watch] = {}
        self._watch_users: dict[int, set[_Entry]] = {}
        self._mounts: dict[str, _MountTable] = {}
        self._machines: Sharing[Key] = Sharing()  # machine name → the key it was last looked up with

    def lookup(self, name: str, pid: int) -> dict[str, str] | None:
        """The cached fields for machine `name` whose root is /proc/`pid`/root, or None (read with fill())."""
        if self._inotify is None:
            return None
        try:
            key = key_of(pid)
        except OSError:
            return None
        with self._lock:
            self._drain()
            entry = self._entries.get(key)
            if entry is None or entry.fields is None:
                return None
            if self._mounts[key[0]].changed():
                self._drop_namespace(key[0])
                return None
            self._use(name, key)
            return entry.fields

    def fill(self, name: str, pid: int) -> dict[str, str]:
        """Read the os-release of /proc/`pid`/root, watching what it was read through (blocking).

        FileNotFoundError if the tree has none; other OSErrors as the walk met them."""
        if self._inotify is None:
            return read_os_release_in_root(f"/proc/{pid}/root")
        key = key_of(pid)
        entry = _Entry(key)
        self._start(name, pid, entry)
        try:
            fields = self._read_watched(pid, entry)
        except Uncacheable:
            self._finish(entry, None)
            return read_os_release_in_root(f"/proc/{pid}/root")
        except BaseException:
            self._finish(entry, None)
            raise
        self._finish(entry, fields)
        return fields

    def forget(self, name: str) -> None:
        """Machine `name` went: drop its entry unless another machine uses it."""
        with self._lock:
            key = self._machines.release(name)
            if key is None:
                return
            entry = self._entries.get(key)
            if entry is not None:
                self._drop(entry)

    def close(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop(entry)
            for table in self._mounts.values():
                os.close(table.fd)
            self._mounts.clear()
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None

    # filling

    def _start(self, name: str, pid: int, entry: _Entry) -> None:
        mntns = entry.key[0]
        with self._lock:
            old = self._entries.get(entry.key)
            if old is not None:
                self._drop(old)
            table = self._mounts.get(mntns)
            if table is None:  # opened before the walk: a mount during it shows up afterwards
                table = self._mounts[mntns] = _MountTable.open(pid)
            table.users += 1
            self._entries[entry.key] = entry
            self._use(name, entry.key)

    def _read_watched(self, pid: int, entry: _Entry) -> dict[str, str]:
        root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dir_fds: dict[str, int] = {}
            try:
                for relative, names in WATCHED_DIRS:
                    try:
                        fd = open_in_root(
                            root_fd,
                            relative,
                            os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                            RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
                        )
                    except FileNotFoundError:
                        continue  # its parent's watch sees it appear
                    except OSError as error:
                        if error.errno in (errno.ELOOP, errno.ENOTDIR):
                            raise Uncacheable from None
                        raise
                    dir_fds[relative] = fd
                    self._watch(entry, fd, DIR_MASK | IN_ONLYDIR, names)
                return self._read_file(root_fd, dir_fds.get("etc"), entry)
            finally:
                for fd in dir_fds.values():
                    os.close(fd)
        finally:
            os.close(root_fd)

    def _read_file(self, root_fd: int, etc_fd: int | None, entry: _Entry) -> dict[str, str]:
        for relative in OS_RELEASE_PATHS:
            if relative == "etc/os-release" and etc_fd is not None:
                try:
                    target = os.readlink("os-release", dir_fd=etc_fd)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    if error.errno != errno.EINVAL:  # EINVAL: a plain file
                        raise
                else:
                    if target not in LINKS_INTO_USR_LIB:
                        raise Uncacheable
            try:
                fd = open_in_root(root_fd, relative)
            except FileNotFoundError:
                continue
            try:
                self._watch(entry, fd, FILE_MASK, None)  # before reading: a write after this is seen
            except BaseException:
                os.close(fd)
                raise
            return read_os_release_fd(fd)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))

    def _watch(self, entry: _Entry, fd: int, mask: int, names: frozenset[str] | None) -> None:
        with self._lock:  # asyncinotify's watch table is not for several threads at once
            if self._inotify is None:
                raise Uncacheable
            try:
                watch = self._inotify.add_watch(f"/proc/self/fd/{fd}", Mask(mask))
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.ENOMEM):
                    raise Uncacheable from None
                raise
            wd = watch.wd
            if entry.stale:  # dropped meanwhile: keep no watch for it
                if wd not in self._watch_users:
                    self._rm_watch(watch)
                raise Uncacheable
            entry.watches[wd] = names
            self._watches[wd] = watch
            self._watch_users.setdefault(wd, set()).add(entry)

    def _finish(self, entry: _Entry, fields: dict[str, str] | None) -> None:
        with self._lock:
            self._drain()
            if fields is None or entry.stale or self._entries.get(entry.key) is not entry:
                self._drop(entry)
            elif self._mounts[entry.key[0]].changed():
                self._drop_namespace(entry.key[0])
            else:
                entry.fields = fields

    # invalidation (with the lock held)

    def _use(self, name: str, key: Key) -> None:
        """Machine `name` now reads through `key`; an entry only it used before goes."""
        old = self._machines.use(name, key)
        if old is not None:
            entry = self._entries.get(old)
            if entry is not None:
                self._drop(entry)

    def _drain(self) -> None:
        assert self._inotify is not None
        while (event := self._inotify.sync_get()) is not None:
            mask = int(event.mask)
            if mask & IN_Q_OVERFLOW:
                for entry in list(self._entries.values()):
                    self._drop(entry)
                continue
            watch = event.watch
            if watch is None:
                continue
            name = str(event.name) if event.name is not None else ""
            for entry in list(self._watch_users.get(watch.wd, ())):
                names = entry.watches.get(watch.wd)
                if names is None or mask & SELF_EVENTS or name in names:
                    self._drop(entry)

    def _drop_namespace(self, mntns: str) -> None:
        for entry in [e for e in self._entries.values() if e.key[0] == mntns]:
            self._drop(entry)

    def _drop(self, entry: _Entry) -> None:
        if entry.stale:
            return
        entry.stale = True
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        for wd in entry.watches:
            users = self._watch_users.get(wd)
            if users is None:
                continue
            users.discard(entry)
            if not users:
                del self._watch_users[wd]
                watch = self._watches.pop(wd, None)
                if watch is not None:
                    self._rm_watch(watch)
        table = self._mounts.get(entry.key[0])
        if table is not None:
            table.users -= 1
            if table.users <= 0:
                del self._mounts[entry.key[0]]
                os.close(table.fd)

    def _rm_watch(self, watch: Watch) -> None:
        if self._inotify is not None:
            try:
                self._inotify.rm_watch(watch)
            except OSError:
                pass  # the kernel dropped it already (its inode went)


def key_of(pid: int) -> Key:
    return os.readlink(f"/proc/{pid}/ns/mnt"), os.readlink(f"/proc/{pid}/root")
