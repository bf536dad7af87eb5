"""io.systemd.UserDatabase on /run/systemd/userdb/io.systemd.Machine, as systemd-machined 252 serves it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Final

from ..errors import ErrorKind, MachineError
from ..ops.usermap import IdMapIndex
from ..registry import Registry
from ..userdb import SERVICE, ConflictingRecord, lookup
from .server import Handler, Interface, Parameters, VarlinkCall, VarlinkError

SOCKET: Final = Path("/run/systemd/userdb/io.systemd.Machine")
INTERFACE: Final = "io.systemd.UserDatabase"
NO_RECORD: Final = f"{INTERFACE}.NoRecordFound"
BAD_SERVICE: Final = f"{INTERFACE}.BadService"
CONFLICT: Final = f"{INTERFACE}.ConflictingRecordFound"
NO_ENUMERATION: Final = f"{INTERFACE}.EnumerationNotSupported"
UINT32_MAX: Final = 2**32 - 1

# 252's io.systemd.UserDatabase (without the later fuzzy/disposition/range fields)
DESCRIPTION: Final = """interface io.systemd.UserDatabase

method GetUserRecord(
	uid : ?int,
	userName : ?string,
	service : string
) -> (
	record : object,
	incomplete : bool
)

method GetGroupRecord(
	gid : ?int,
	groupName : ?string,
	service : string
) -> (
	record : object,
	incomplete : bool
)

method GetMemberships(
	userName : ?string,
	groupName : ?string,
	service : string
) -> (
	userName : string,
	groupName : string
)

error NoRecordFound()
error BadService()
error ServiceNotAvailable()
error ConflictingRecordFound()
error EnumerationNotSupported()
"""


def _dispatch(parameters: Parameters, fields: dict[str, str]) -> dict[str, Any]:
    """252's json_dispatch(): unknown keys → EADDRNOTAVAIL, wrong types or null → EINVAL."""
    values: dict[str, Any] = {}
    for key, value in parameters.items():
        kind = fields.get(key)
        if kind is None:
            raise OSError(errno.EADDRNOTAVAIL, key)
        if kind == "id":
            if type(value) is not int or not 0 <= value < UINT32_MAX or value == 0xFFFF:
                raise OSError(errno.EINVAL, key)
        elif not isinstance(value, str):
            raise OSError(errno.EINVAL, key)
        values[key] = value
    return values


def _check_service(values: dict[str, Any]) -> None:
    if values.get("service") != SERVICE:
        raise VarlinkError(BAD_SERVICE)


def userdb_interface(registry: Registry, uid_index: IdMapIndex, gid_index: IdMapIndex) -> Interface:
    """The interface, bound to the machine table and the ID range indexes."""

    def record_handler(index: IdMapIndex, id_key: str, name_key: str) -> Handler:
        async def handler(call: VarlinkCall, parameters: Parameters) -> Parameters:
            values = _dispatch(parameters, {id_key: "id", name_key: "str", "service": "str"})
            _check_service(values)
            if id_key not in values and name_key not in values:
                raise VarlinkError(NO_ENUMERATION)
            try:
                record = lookup(registry, index, values.get(id_key), values.get(name_key))
            except ConflictingRecord:
                raise VarlinkError(CONFLICT) from None
            except MachineError as exc:
                if exc.kind is ErrorKind.ERRNO:
                    raise OSError(exc.errno, exc.message) from None  # io.systemd.System {"errno": N}
                raise
            if record is None:
                raise VarlinkError(NO_RECORD)
            return {"record": record}

        return handler

    async def get_memberships(call: VarlinkCall, parameters: Parameters) -> Parameters:
        values = _dispatch(parameters, {"userName": "str", "groupName": "str", "service": "str"})
        _check_service(values)
        raise VarlinkError(NO_RECORD)  # containers' synthesized users are members of nothing

    methods: dict[str, Handler] = {
        "GetUserRecord": record_handler(uid_index, "uid", "userName"),
        "GetGroupRecord": record_handler(gid_index, "gid", "groupName"),
        "GetMemberships": get_memberships,
    }
    return Interface(INTERFACE, DESCRIPTION, methods)
