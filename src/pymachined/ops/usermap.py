"""UID/GID mapping between containers and the host, with an index over the outside ranges."""

from __future__ import annotations

import bisect
import errno
import fcntl
import os
import sys
from dataclasses import dataclass, field
from typing import Final, Literal

from ..errors import ErrorKind, MachineError, from_errno, invalid_args
from ..machine import Machine, MachineClass

Kind = Literal["uid", "gid"]
HOST_RANGE: Final = 0x10000  # IDs below this belong to the host
INVALID_IDS: Final = (0xFFFFFFFF, 0xFFFF)


@dataclass(frozen=True, slots=True)
class MapLine:
    """One line of /proc/<pid>/uid_map: inside base, outside base, count."""

    inside: int
    outside: int
    count: int


def id_is_valid(value: int) -> bool:
    return value not in INVALID_IDS


def read_map(pid: int, kind: Kind) -> list[MapLine] | None:
    """The uid_map/gid_map of a process; None when the file does not exist."""
    try:
        with open(f"/proc/{pid}/{kind}_map") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    lines: list[MapLine] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if len(words) != 3 or not all(w.isdigit() for w in words):
            raise OSError(errno.EBADMSG, os.strerror(errno.EBADMSG))
        lines.append(MapLine(int(words[0]), int(words[1]), int(words[2])))
    return lines


def userns_id(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino
    except OSError:
        return 0


OWN_USERNS: Final = userns_id(os.getpid())
NS_GET_OWNER_UID: Final = 0xB704  # _IO(0xb7, 0x4)


def userns_owner(pid: int) -> int:
    """The UID that created the process's user namespace (OSError if it cannot be asked)."""
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        buffer = bytearray(4)
        fcntl.ioctl(fd, NS_GET_OWNER_UID, buffer)
        return int.from_bytes(buffer, sys.byteorder)
    finally:
        os.close(fd)


def process_owned_by(pid: int, uid: int) -> bool:
    """The process runs as `uid`, or in a user namespace that `uid` created."""
    try:
        if os.stat(f"/proc/{pid}").st_uid == uid:
            return True
        return userns_owner(pid) == uid
    except OSError:
        return False


def _noun(kind: Kind) -> str:
    return "user" if kind == "uid" else "group"


def map_from_machine(machine: Machine, inner: int, kind: Kind) -> int:
    """MapFromMachineUser/Group: the host ID of a container's `inner` ID."""
    noun = _noun(kind)
    if not id_is_valid(inner):
        raise invalid_args(f"Invalid {noun} ID {inner}")
    if machine.machine_class is not MachineClass.CONTAINER:
        raise invalid_args("Not supported for non-container machines.")
    try:
        lines = read_map(machine.leader, kind) or []
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None
    for line in lines:
        if line.inside <= inner < line.inside + line.count:
            outer = inner - line.inside + line.outside
            if not id_is_valid(outer):
                raise from_errno(errno.EINVAL)
            return outer
    # 252 names the group case's error NoSuchUserMapping too
    raise MachineError(ErrorKind.NO_SUCH_USER_MAPPING, f"Machine '{machine.name}' has no matching {noun} mappings.")


@dataclass(slots=True)
class _Range:
    start: int  # outside base
    end: int  # outside base + count
    inside: int
    machine: Machine


@dataclass
class IdMapIndex:
    """Outside ID ranges of all containers, sorted for bisection (one index per kind).

    Registration only queues a machine: its user namespace and map are read at the next lookup, all
    queued machines at once with one rebuild, so registering and unregistering containers nobody asks
    about costs no system call here."""

    kind: Kind
    _ranges: list[_Range] = field(default_factory=list)
    _starts: list[int] = field(default_factory=list)
    _reach: list[int] = field(default_factory=list)  # _reach[i]: largest end among _ranges[: i + 1]
    _userns: dict[str, int] = field(default_factory=dict)
    # containers not read yet, or whose user namespace had no map yet (it is written once, maybe later)
    _pending: dict[str, Machine] = field(default_factory=dict)

    def add(self, machine: Machine) -> None:
        """(Re)index a machine at the next lookup; machines without their own user namespace add nothing."""
        self.remove(machine)
        if machine.machine_class is not MachineClass.CONTAINER or machine.leader <= 0:
            return
        self._pending[machine.name] = machine

    def remove(self, machine: Machine) -> None:
        self._pending.pop(machine.name, None)
        if self._userns.pop(machine.name, None) is None:
            return
        if any(r.machine is machine for r in self._ranges):
            self._ranges = [r for r in self._ranges if r.machine is not machine]
            self._rebuild()

    def _index_pending(self) -> None:
        """Read the maps of the queued machines; those whose map is still empty stay queued."""
        pending, self._pending = self._pending, {}
        added = False
        for machine in pending.values():
            added |= self._index(machine)
        if added:
            self._rebuild()

    def _index(self, machine: Machine) -> bool:
        """Read one machine's user namespace and map; True if it added ranges."""
        namespace = userns_id(machine.leader)
        if namespace == OWN_USERNS:
            # our own user namespace: the identity map, whose lines (outside base 0) are never indexed
            self._userns[machine.name] = namespace
            return False
        try:
            lines = read_map(machine.leader, self.kind) or []
        except OSError:
            return False
        self._userns[machine.name] = namespace
        if not lines:
            self._pending[machine.name] = machine
        added = False
        for line in lines:
            if line.outside == 0:  # an identity map (no user namespace of its own)
                continue
            self._ranges.append(_Range(line.outside, line.outside + line.count, line.inside, machine))
            added = True
        return added

    def _rebuild(self) -> None:
        self._ranges.sort(key=lambda r: r.start)
        self._starts = [r.start for r in self._ranges]
        self._reach = []
        reach = 0
        for r in self._ranges:
            reach = max(reach, r.end)
            self._reach.append(reach)

    def lookup(self, outer: int) -> tuple[Machine, int] | None:
        """The container owning host ID `outer`, and its inside ID (O(log n) without overlaps)."""
        if self._pending:
            self._index_pending()
        index = bisect.bisect_right(self._starts, outer) - 1
        while index >= 0 and self._reach[index] > outer:
            entry = self._ranges[index]
            if entry.start <= outer < entry.end:
                if userns_id(entry.machine.leader) != self._userns.get(entry.machine.name):
                    self.add(entry.machine)  # the leader moved to another user namespace: reindex
                    return self.lookup(outer)
                return entry.machine, outer - entry.start + entry.inside
            index -= 1
        return None


def map_to_machine(index: IdMapIndex, outer: int) -> tuple[Machine, int]:
    """MapToMachineUser/Group: which container, and which inside ID, `outer` is."""
    kind = index.kind
    noun = _noun(kind)
    if not id_is_valid(outer):
        raise invalid_args(f"Invalid {noun} ID {outer}")
    error_kind = ErrorKind.NO_SUCH_USER_MAPPING if kind == "uid" else ErrorKind.NO_SUCH_GROUP_MAPPING
    if outer < HOST_RANGE:
        what = "User" if kind == "uid" else "Group"
        host = "UID" if kind == "uid" else "GID"
        raise MachineError(error_kind, f"{what} {outer} belongs to host {host} range")
    found = index.lookup(outer)
    if found is None:
        raise MachineError(error_kind, f"No matching {noun} mapping for {outer}.")
    if not id_is_valid(found[1]):
        raise from_errno(errno.EINVAL)
    return found
