"""org.freedesktop.machine1.Machine: machine objects, found per call below the machine prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Final

from ..machine import MACHINE_PATH_PREFIX, Machine
from ..names import bus_label_unescape
from ..ops.addresses import machine_addresses
from ..ops.os_release import machine_os_release
from ..ops.uid_shift import machine_uid_shift
from ..registry import Registry
from .dispatch import Call
from .vtable import Body, Interface, Method, Property, args

INTERFACE: Final = "org.freedesktop.machine1.Machine"
PREFIX: Final = MACHINE_PATH_PREFIX.rstrip("/")


async def get_addresses(call: Call, machine: Machine) -> Body:
    found = await asyncio.to_thread(machine_addresses, machine)
    return [[[a.family, a.address] for a in found]]


async def get_os_release(call: Call, machine: Machine) -> Body:
    return [await asyncio.to_thread(machine_os_release, machine)]


def get_uid_shift(call: Call, machine: Machine) -> Body:
    return [machine_uid_shift(machine)]


def _interface() -> Interface:
    return Interface(
        INTERFACE,
        [
            Property("Name", "s", lambda m: m.name),
            Property("Id", "ay", lambda m: m.id),
            Property("Timestamp", "t", lambda m: m.timestamp.realtime),
            Property("TimestampMonotonic", "t", lambda m: m.timestamp.monotonic),
            Property("Service", "s", lambda m: m.service),
            Property("Unit", "s", lambda m: m.unit),
            Property("Scope", "s", lambda m: m.unit, hidden=True),
            Property("Leader", "u", lambda m: m.leader),
            Property("Class", "s", lambda m: m.machine_class.value),
            Property("RootDirectory", "s", lambda m: m.root_directory),
            Property("NetworkInterfaces", "ai", lambda m: list(m.netif)),
            Property("State", "s", lambda m: m.state.value, emits_change="false"),
            Method("GetAddresses", get_addresses, out_args=args("a(iay) addresses")),
            Method("GetOSRelease", get_os_release, out_args=args("a{ss} fields")),
            Method("GetUIDShift", get_uid_shift, out_args=args("u shift")),
        ],
    )


MACHINE_INTERFACE: Final = _interface()


class MachineObjects:
    """Resolves machine object paths, `self` included, and lists their labels."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def find(self, call: Call, label: str) -> Machine | None | Awaitable[Machine | None]:
        if label == "self":
            return self._find_self(call)
        return self.registry.find(bus_label_unescape(label))

    async def _find_self(self, call: Call) -> Machine | None:
        creds = await call.credentials()
        return self.registry.find_by_pid(creds.pid)

    def labels(self) -> list[str]:
        return [m.object_path.rsplit("/", 1)[1] for m in self.registry]
