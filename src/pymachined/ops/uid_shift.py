"""The UID shift of a container: where its user namespace starts on the host."""

from __future__ import annotations

from ..errors import MachineError, from_errno, not_supported
from ..machine import Machine, MachineClass

MIN_RANGE = 65534


def _read_map(pid: int, which: str) -> list[tuple[int, int, int]] | None:
    try:
        with open(f"/proc/{pid}/{which}") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in text.splitlines() if line.strip())]


def machine_uid_shift(machine: Machine) -> int:
    """GetUIDShift: 0 for the host and for containers without a user namespace of their own."""
    if machine.machine_class is MachineClass.HOST:
        return 0
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("UID/GID shift may only be determined for container machines.")
    complex_ = not_supported(f"Machine {machine.name} uses a complex UID/GID mapping, cannot determine shift")
    try:
        uid_map = _read_map(machine.leader, "uid_map")
        if uid_map is None:
            return 0
        if len(uid_map) != 1:
            raise complex_
        inside, outside, length = uid_map[0]
        if inside != 0 or length < MIN_RANGE:
            raise complex_
        gid_map = _read_map(machine.leader, "gid_map")
        if gid_map != uid_map:
            raise complex_
        return outside
    except MachineError:
        raise
    except OSError as exc:
        raise from_errno(exc.errno or 5) from None
