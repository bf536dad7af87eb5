"""User and group records for the IDs of containers' user namespaces (vu-<machine>-<uid>, vg-…).

The same two primitives as MapToMachineUser (owns) and MapFromMachineUser (translate), plus the
name synthesis and validity rules of systemd-machined 252. Transport-free: the Varlink userdb
endpoint turns None into NoRecordFound and MachineError into io.systemd.System.
"""

from __future__ import annotations

import errno
import string
from typing import Any, Final

from .errors import from_errno
from .machine import Machine, MachineClass
from .ops.usermap import HOST_RANGE, IdMapIndex, Kind, id_is_valid, read_map
from .registry import Registry

SERVICE: Final = "io.systemd.Machine"
NAME_MAX_LENGTH: Final = 31  # UT_NAMESIZE - 1
GID_NOBODY: Final = 65534
NOLOGIN: Final = "/usr/sbin/nologin"
_FIRST: Final = frozenset(string.ascii_letters + "_")
_REST: Final = frozenset(string.ascii_letters + string.digits + "_-")


def parse_id(text: str) -> int | None:
    """systemd's strict parse_uid(): decimal, no sign, no leading zeros or spaces, a valid ID."""
    if not text or not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    if value >= 2**32 or not id_is_valid(value):
        return None
    return value


def name_is_valid(name: str) -> bool:
    """The strict user/group name rules (valid_user_group_name without relaxation)."""
    if not name or len(name) > NAME_MAX_LENGTH or name[0] not in _FIRST:
        return False
    if any(c not in _REST for c in name[1:]):
        return False
    return parse_id(name) is None


def gecos_is_valid(text: str) -> bool:
    return text.isprintable() and ":" not in text


def _prefix(kind: Kind) -> str:
    return "vu-" if kind == "uid" else "vg-"


def _record(kind: Kind, name: str, value: int, machine: Machine, inside: int) -> dict[str, Any]:
    if kind == "uid":
        record: dict[str, Any] = {"userName": name, "uid": value, "gid": GID_NOBODY}
        real_name = f"UID {inside} of Container {machine.name}"
        if gecos_is_valid(real_name):
            record["realName"] = real_name
        record.update({"homeDirectory": "/", "shell": NOLOGIN, "locked": True})
    else:
        record = {"groupName": name, "gid": value}
        description = f"GID {inside} of Container {machine.name}"
        if gecos_is_valid(description):
            record["description"] = description
    record.update({"service": SERVICE, "disposition": "container"})
    return record


def record_by_id(index: IdMapIndex, outer: int) -> dict[str, Any] | None:
    """The record of host ID `outer`, if a container's user namespace owns it."""
    if outer < HOST_RANGE:
        return None
    found = index.lookup(outer)
    if found is None:
        return None
    machine, inside = found
    if not id_is_valid(inside):
        raise from_errno(errno.EINVAL)
    name = f"{_prefix(index.kind)}{machine.name}-{inside}"
    if not name_is_valid(name):
        return None
    return _record(index.kind, name, outer, machine, inside)


def record_by_name(registry: Registry, kind: Kind, name: str) -> dict[str, Any] | None:
    """The record of a vu-/vg- name: its container's ID translated to the host (no host-range check)."""
    prefix = _prefix(kind)
    if not name_is_valid(name) or not name.startswith(prefix):
        return None
    machine_name, dash, number = name[len(prefix) :].rpartition("-")
    if not dash:
        return None
    inside = parse_id(number)
    if inside is None:
        return None
    machine = registry.find(machine_name)
    if machine is None or machine.machine_class is not MachineClass.CONTAINER:
        return None
    try:
        lines = read_map(machine.leader, kind)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None
    for line in lines or []:
        if line.inside <= inside < line.inside + line.count:
            outer = inside - line.inside + line.outside
            if not id_is_valid(outer):
                raise from_errno(errno.EINVAL)
            return _record(kind, name, outer, machine, inside)
    return None


class ConflictingRecord(Exception):
    """An ID and a name were both given, and the record of the ID has another name."""


def lookup(registry: Registry, index: IdMapIndex, by_id: int | None, by_name: str | None) -> dict[str, Any] | None:
    """GetUserRecord/GetGroupRecord without the transport: a record, or None when there is none."""
    if by_id is not None:
        record = record_by_id(index, by_id)
        if record is not None and by_name is not None:
            key = "userName" if index.kind == "uid" else "groupName"
            if record[key] != by_name:
                raise ConflictingRecord(by_name)
        return record
    if by_name is not None:
        return record_by_name(registry, index.kind, by_name)
    return None
