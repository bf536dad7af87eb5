"""org.freedesktop.machine1.Machine: machine objects, found per call below the machine prefix."""

from __future__ import annotations

import errno
from collections.abc import Awaitable
from typing import Final

from ..actions import Authorize, Services
from ..actions import machines as actions
from ..errors import from_errno
from ..lifecycle import Caller
from ..machine import MACHINE_PATH_PREFIX, Machine
from ..names import bus_label_unescape
from ..ops.uid_shift import machine_uid_shift
from ..registry import Registry
from .dispatch import Call
from .polkit import check_authorization
from .vtable import Body, Interface, Method, Property, WithFds, args

INTERFACE: Final = "org.freedesktop.machine1.Machine"
PREFIX: Final = MACHINE_PATH_PREFIX.rstrip("/")


def services(call: Call) -> Services:
    return call.dispatcher.context  # type: ignore[no-any-return]


def authorizer(call: Call) -> Authorize:
    """Polkit for this D-Bus caller (root bypasses)."""

    async def authorize(action: str, details: dict[str, str]) -> None:
        await check_authorization(call, action, details)

    return authorize


async def caller_of(call: Call) -> Caller:
    creds = await call.credentials()
    return Caller(uid=creds.uid, pid=creds.pid)


async def terminate(call: Call, machine: Machine) -> Body:
    await actions.terminate(services(call), machine, authorizer(call))
    return []


async def kill(call: Call, machine: Machine, who: str, signum: int) -> Body:
    await actions.kill(services(call), machine, who, signum, authorizer(call))
    return []


def get_addresses(call: Call, machine: Machine) -> Body:
    return [[[a.family, a.address] for a in actions.addresses(services(call), machine)]]


def get_ssh_info(call: Call, machine: Machine) -> Body:
    if not machine.ssh_address or not machine.ssh_private_key_path:
        raise from_errno(errno.ENOENT)
    return [machine.ssh_address, machine.ssh_private_key_path]


def get_os_release(call: Call, machine: Machine) -> Body | Awaitable[Body]:
    fields = actions.cached_os_release(services(call), machine)
    if fields is not None:
        return [fields]
    return _read_os_release(call, machine)


async def _read_os_release(call: Call, machine: Machine) -> Body:
    return [await actions.os_release(services(call), machine)]


def get_uid_shift(call: Call, machine: Machine) -> Body:
    return [machine_uid_shift(machine)]


async def open_root_directory(call: Call, machine: Machine) -> WithFds:
    return WithFds([0], [await actions.open_root_directory(machine, authorizer(call))])


async def open_pty(call: Call, machine: Machine) -> WithFds:
    master, path = await actions.open_pty(machine, authorizer(call))
    return WithFds([0, path], [master])


async def open_login(call: Call, machine: Machine) -> WithFds:
    master, path = await actions.open_login(services(call), machine, authorizer(call))
    return WithFds([0, path], [master])


async def open_shell(call: Call, machine: Machine, user: str, path: str, argv: list[str], env: list[str]) -> WithFds:
    master, pty_path = await actions.open_shell(services(call), machine, user, path, argv, env, authorizer(call))
    return WithFds([0, pty_path], [master])


async def bind_mount(call: Call, machine: Machine, source: str, destination: str, read_only: bool, mkdir: bool) -> Body:
    await actions.bind_mount(machine, source, destination, read_only, mkdir, authorizer(call))
    return []


async def _copy(call: Call, machine: Machine, source: str, destination: str, flags: int) -> Body:
    to_container = "CopyTo" in (call.message.member or "")
    await actions.copy_files(services(call), machine, source, destination, to_container, flags, authorizer(call))
    return []


async def copy_files(call: Call, machine: Machine, source: str, destination: str) -> Body:
    return await _copy(call, machine, source, destination, 0)


async def copy_files_with_flags(call: Call, machine: Machine, source: str, destination: str, flags: int) -> Body:
    return await _copy(call, machine, source, destination, flags)


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
            Method("OpenPTY", open_pty, out_args=args("h pty, s pty_path")),
            Method("OpenLogin", open_login, out_args=args("h pty, s pty_path")),
            Method("OpenShell", open_shell, args("s user, s path, as args, as environment"), args("h pty, s pty_path")),
            Method("BindMount", bind_mount, args("s source, s destination, b read_only, b mkdir")),
            Method("CopyFrom", copy_files, args("s source, s destination")),
            Method("CopyTo", copy_files, args("s source, s destination")),
            Method("CopyFromWithFlags", copy_files_with_flags, args("s source, s destination, t flags")),
            Method("CopyToWithFlags", copy_files_with_flags, args("s source, s destination, t flags")),
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
