"""The UID shift of a container: where its user namespace starts on the host."""

from __future__ import annotations

import errno

from ..errors import ErrorKind, MachineError, from_errno, not_supported
from ..machine import Machine, MachineClass
from .usermap import read_map

MIN_RANGE = 65534


def machine_uid_shift(machine: Machine) -> int:
    """GetUIDShift: the shift, with 252's message for a complex mapping."""
    try:
        return uid_shift(machine)
    except MachineError as exc:
        if exc.kind is ErrorKind.ERRNO and exc.errno == errno.ENXIO:
            raise not_supported(
                f"Machine {machine.name} uses a complex UID/GID mapping, cannot determine shift"
            ) from None
        raise


def uid_shift(machine: Machine) -> int:
    """0 for the host and for containers without a user namespace of their own; ENXIO when complex."""
    if machine.machine_class is MachineClass.HOST:
        return 0
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("UID/GID shift may only be determined for container machines.")
    complex_ = from_errno(errno.ENXIO)
    try:
        uid_map = read_map(machine.leader, "uid")
        if uid_map is None:
            return 0
        if len(uid_map) != 1 or uid_map[0].inside != 0 or uid_map[0].count < MIN_RANGE:
            raise complex_
        if read_map(machine.leader, "gid") != uid_map:
            raise complex_
        return uid_map[0].outside
    except MachineError:
        raise
    except OSError as exc:
        raise from_errno(exc.errno or 5) from None
