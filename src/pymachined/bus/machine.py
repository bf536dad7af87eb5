"""org.freedesktop.machine1.Machine: machine objects, found per call below the machine prefix."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from ..errors import from_errno
from ..lifecycle import Caller, Lifecycle, validate_kill
from ..machine import MACHINE_PATH_PREFIX, Machine
from ..names import bus_label_unescape
from ..ops.addresses import AddressReader, machine_addresses
from ..ops.os_release import machine_os_release
from ..ops.root import open_root
from ..ops.uid_shift import machine_uid_shift
from ..ops.usermap import IdMapIndex
from ..registry import Registry
from .dispatch import Call
from .polkit import check_authorization
from .vtable import Body, Interface, Method, Property, WithFds, args

INTERFACE: Final = "org.freedesktop.machine1.Machine"
PREFIX: Final = MACHINE_PATH_PREFIX.rstrip("/")


@dataclass(slots=True)
class Services:
    """What bus handlers reach through the dispatcher."""

    registry: Registry
    lifecycle: Lifecycle
    uid_index: IdMapIndex
    gid_index: IdMapIndex
    addresses: AddressReader


def services(call: Call) -> Services:
    return call.dispatcher.context  # type: ignore[no-any-return]


async def caller_of(call: Call) -> Caller:
    creds = await call.credentials()
    return Caller(uid=creds.uid, pid=creds.pid)


async def terminate(call: Call, machine: Machine) -> Body:
    await check_authorization(call, "manage-machines", {"machine": machine.name, "verb": "terminate"})
    await services(call).lifecycle.terminate(machine)
    return []


async def kill(call: Call, machine: Machine, who: str, signum: int) -> Body:
    target = validate_kill(who, signum)
    await check_authorization(call, "manage-machines", {"machine": machine.name, "verb": "kill"})
    await services(call).lifecycle.kill(machine, target, signum)
    return []


async def get_addresses(call: Call, machine: Machine) -> Body:
    found = await asyncio.to_thread(machine_addresses, machine, services(call).addresses)
    return [[[a.family, a.address] for a in found]]


def get_ssh_info(call: Call, machine: Machine) -> Body:
    if not machine.ssh_address or not machine.ssh_private_key_path:
        raise from_errno(errno.ENOENT)
    return [machine.ssh_address, machine.ssh_private_key_path]


async def get_os_release(call: Call, machine: Machine) -> Body:
    return [await asyncio.to_thread(machine_os_release, machine)]


def get_uid_shift(call: Call, machine: Machine) -> Body:
    return [machine_uid_shift(machine)]


async def open_root_directory(call: Call, machine: Machine) -> WithFds:
    await check_authorization(call, "manage-machines", {"machine": machine.name, "verb": "open_root_directory"})
    return WithFds([0], [open_root(machine)])


def _interface() -> Interface:
    # Properties newer than 252 are hidden like Scope: Get answers them, GetAll and
    # introspection stay exactly 252's, so 252 clients (machinectl show) see no change.
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
            Property("Subgroup", "s", lambda m: m.subgroup, hidden=True),
            Property("Leader", "u", lambda m: m.leader),
            Property("LeaderPIDFDId", "t", lambda m: m.leader_pidfd_id, hidden=True),
            Property("Supervisor", "u", lambda m: m.supervisor, hidden=True),
            Property("SupervisorPIDFDId", "t", lambda m: m.supervisor_pidfd_id, hidden=True),
            Property("Class", "s", lambda m: m.machine_class.value),
            Property("RootDirectory", "s", lambda m: m.root_directory),
            Property("NetworkInterfaces", "ai", lambda m: list(m.netif)),
            Property("VSockCID", "u", lambda m: m.vsock_cid, hidden=True),
            Property("SSHAddress", "s", lambda m: m.ssh_address, hidden=True),
            Property("SSHPrivateKeyPath", "s", lambda m: m.ssh_private_key_path, hidden=True),
            Property("State", "s", lambda m: m.state.value, emits_change="false"),
            Property("UID", "u", lambda m: m.uid, hidden=True),
            Method("Terminate", terminate),
            Method("Kill", kill, args("s who, i signal")),
            Method("GetAddresses", get_addresses, out_args=args("a(iay) addresses")),
            Method("GetSSHInfo", get_ssh_info, out_args=args("s ssh_address, s ssh_private_key_path")),
            Method("GetOSRelease", get_os_release, out_args=args("a{ss} fields")),
            Method("GetUIDShift", get_uid_shift, out_args=args("u shift")),
            Method("OpenRootDirectory", open_root_directory, out_args=args("h fd")),
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
