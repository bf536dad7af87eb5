"""org.freedesktop.machine1.Manager at /org/freedesktop/machine1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from dbus_fast import Message

from ..errors import from_errno
from ..images.pool import POOL_PATH, pool_limit, pool_usage
from ..machine import Machine
from ..registry import Registry, validate_registration
from .dispatch import Call
from .machine import get_addresses, get_os_release, get_uid_shift
from .polkit import check_authorization
from .vtable import Arg, Body, Interface, Method, Property, Signal, args

INTERFACE: Final = "org.freedesktop.machine1.Manager"
PATH: Final = "/org/freedesktop/machine1"
UINT32_MAX: Final = 2**32 - 1


class Manager:
    """The object the Manager interface's handlers act on."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry


def _get_machine(call: Call, manager: Manager, name: str) -> Body:
    return [manager.registry.get(name).object_path]


def _get_machine_by_pid(call: Call, manager: Manager, pid: int) -> Body | Awaitable[Body]:
    if pid == 0:
        return _get_machine_by_caller(call, manager)
    if pid > 2**31 - 1:
        raise from_errno(22)  # EINVAL: negative as pid_t
    return [manager.registry.get_by_pid(pid).object_path]


async def _get_machine_by_caller(call: Call, manager: Manager) -> Body:
    creds = await call.credentials()
    return [manager.registry.get_by_pid(creds.pid).object_path]


def _list_machines(call: Call, manager: Manager) -> Body:
    return [[[m.name, m.machine_class.value, m.service, m.object_path] for m in manager.registry]]


async def _register(
    call: Call,
    manager: Manager,
    name: str,
    machine_id: bytes,
    service: str,
    class_name: str,
    leader: int,
    root_directory: str,
    netif: Sequence[int] = (),
) -> Body:
    req = validate_registration(name, bytes(machine_id), service, class_name, leader, root_directory, netif)
    if req.leader == 0:
        req.leader = (await call.credentials()).pid
    return [manager.registry.register(req).object_path]


def _register_machine(
    call: Call, manager: Manager, name: str, mid: bytes, service: str, cls: str, leader: int, root: str
) -> Awaitable[Body]:
    return _register(call, manager, name, mid, service, cls, leader, root)


def _register_machine_with_network(
    call: Call,
    manager: Manager,
    name: str,
    mid: bytes,
    service: str,
    cls: str,
    leader: int,
    root: str,
    netif: list[int],
) -> Awaitable[Body]:
    return _register(call, manager, name, mid, service, cls, leader, root, netif)


async def _unregister_machine(call: Call, manager: Manager, name: str) -> Body:
    machine = manager.registry.get(name)
    await check_authorization(call, "manage-machines", {"machine": machine.name, "verb": "unregister"})
    if manager.registry.find(machine.name) is machine:
        manager.registry.unregister(machine)
    return []


def _on_machine(handler: Callable[..., Body | Awaitable[Body]]) -> Callable[..., Body | Awaitable[Body]]:
    """A Manager forwarder: look the machine up by name, then run the Machine method."""

    def forward(call: Call, manager: Manager, name: str, *rest: object) -> Body | Awaitable[Body]:
        machine: Machine = manager.registry.get(name)
        return handler(call, machine, *rest)

    return forward


def _interface() -> Interface:
    return Interface(
        INTERFACE,
        [
            Property("PoolPath", "s", lambda _m: str(POOL_PATH), emits_change="false"),
            Property("PoolUsage", "t", lambda _m: pool_usage(), emits_change="false"),
            Property("PoolLimit", "t", lambda _m: pool_limit(), emits_change="false"),
            Method("GetMachine", _get_machine, args("s name"), args("o machine")),
            Method("GetMachineByPID", _get_machine_by_pid, args("u pid"), args("o machine")),
            Method("ListMachines", _list_machines, (), args("a(ssso) machines")),
            Method(
                "RegisterMachine",
                _register_machine,
                args("s name, ay id, s service, s class, u leader, s root_directory"),
                args("o path"),
                privileged=True,
            ),
            Method(
                "RegisterMachineWithNetwork",
                _register_machine_with_network,
                args("s name, ay id, s service, s class, u leader, s root_directory, ai ifindices"),
                args("o path"),
                privileged=True,
            ),
            Method("UnregisterMachine", _unregister_machine, args("s name")),
            Method("GetMachineAddresses", _on_machine(get_addresses), args("s name"), args("a(iay) addresses")),
            Method("GetMachineOSRelease", _on_machine(get_os_release), args("s name"), args("a{ss} fields")),
            Method("GetMachineUIDShift", _on_machine(get_uid_shift), args("s name"), args("u shift")),
            Signal("MachineNew", (Arg("s", "machine"), Arg("o", "path"))),
            Signal("MachineRemoved", (Arg("s", "machine"), Arg("o", "path"))),
        ],
    )


MANAGER_INTERFACE: Final = _interface()


def machine_signal(member: str, machine: Machine) -> Message:
    return Message.new_signal(PATH, INTERFACE, member, "so", [machine.name, machine.object_path])
