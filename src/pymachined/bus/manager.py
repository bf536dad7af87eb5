"""org.freedesktop.machine1.Manager at /org/freedesktop/machine1."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from dbus_fast import Message

from ..actions import machines as machine_actions
from ..errors import from_errno, invalid_args, machine_exists
from ..images import paths as image_paths
from ..images.pool import pool_limit, pool_usage
from ..leader import PidRef
from ..lifecycle import Extras
from ..machine import Machine, MachineClass
from ..names import machine_name_is_valid
from ..ops.usermap import Kind, id_is_valid, map_from_machine, map_to_machine
from ..registry import Registration, validate_registration
from ..units import ScopeProperty
from . import image as images
from .dispatch import Call
from .machine import (
    authorizer,
    bind_mount,
    caller_of,
    copy_files,
    copy_files_with_flags,
    get_addresses,
    get_os_release,
    get_ssh_info,
    get_uid_shift,
    kill,
    open_login,
    open_pty,
    open_root_directory,
    open_shell,
    services,
    terminate,
)
from .premarshalled import Marshalled, marshal_body
from .vtable import Arg, Body, Interface, Method, Property, Signal, WithFds, args

INTERFACE: Final = "org.freedesktop.machine1.Manager"
PATH: Final = "/org/freedesktop/machine1"
VMADDR_CID_ANY: Final = 2**32 - 1
PATH_MAX: Final = 4096


def _get_machine(call: Call, _obj: None, name: str) -> Body:
    return [services(call).registry.get(name).object_path]


def _get_machine_by_pid(call: Call, _obj: None, pid: int) -> Body | Awaitable[Body]:
    if pid == 0:
        return _get_machine_by_caller(call)
    if pid > 2**31 - 1:
        raise from_errno(errno.EINVAL)  # negative as pid_t
    return [services(call).registry.get_by_pid(pid).object_path]


async def _get_machine_by_caller(call: Call) -> Body:
    creds = await call.credentials()
    return [services(call).registry.get_by_pid(creds.pid).object_path]


def _list_machines(call: Call, _obj: None) -> Marshalled:
    """Marshalled once per registry generation: with many machines, marshalling is most of the cost."""
    registry = services(call).registry
    memo = call.dispatcher.memo
    cached = memo.get("ListMachines")
    if cached is None or cached[0] != registry.generation:
        body = [[[m.name, m.machine_class.value, m.service, m.object_path] for m in registry]]
        cached = memo["ListMachines"] = (registry.generation, marshal_body("a(ssso)", body))
    return cached[1]


# registration and creation


async def _validated(
    call: Call, name: str, mid: bytes, service: str, cls: str, leader: int, root: str, netif: Sequence[int] = ()
) -> Registration:
    req = validate_registration(name, bytes(mid), service, cls, leader, root, netif)
    if req.leader == 0:
        req.leader = (await call.credentials()).pid
    return req


async def _register(call: Call, req: Registration, extras: Extras | None = None) -> Body:
    caller = await caller_of(call)
    machine_actions.check_leader_owner(services(call), req.leader, caller.uid)
    return [services(call).lifecycle.register(req, caller, extras).object_path]


async def _create(call: Call, req: Registration, scope_properties: list[Any], extras: Extras | None = None) -> Body:
    caller = await caller_of(call)
    machine_actions.check_leader_owner(services(call), req.leader, caller.uid)
    properties: list[ScopeProperty] = [(name, v.signature, v.value) for name, v in scope_properties]
    started = await services(call).lifecycle.create(req, properties, caller, extras)
    machine = await started
    return [machine.object_path]


async def _register_machine(
    call: Call, _obj: None, name: str, mid: bytes, service: str, cls: str, leader: int, root: str
) -> Body:
    return await _register(call, await _validated(call, name, mid, service, cls, leader, root))


async def _register_machine_with_network(
    call: Call, _obj: None, name: str, mid: bytes, service: str, cls: str, leader: int, root: str, netif: list[int]
) -> Body:
    return await _register(call, await _validated(call, name, mid, service, cls, leader, root, netif))


async def _create_machine(
    call: Call, _obj: None, name: str, mid: bytes, service: str, cls: str, leader: int, root: str, scope: list[Any]
) -> Body:
    return await _create(call, await _validated(call, name, mid, service, cls, leader, root), scope)


async def _create_machine_with_network(
    call: Call,
    _obj: None,
    name: str,
    mid: bytes,
    service: str,
    cls: str,
    leader: int,
    root: str,
    netif: list[int],
    scope: list[Any],
) -> Body:
    return await _create(call, await _validated(call, name, mid, service, cls, leader, root, netif), scope)


async def _register_machine_ex(call: Call, _obj: None, name: str, properties: list[Any]) -> Body:
    req, extras = await _parse_ex(call, name, properties)
    return await _register(call, req, extras)


async def _create_machine_ex(call: Call, _obj: None, name: str, properties: list[Any], scope: list[Any]) -> Body:
    req, extras = await _parse_ex(call, name, properties)
    return await _create(call, req, scope, extras)


_EX_TYPES: Final = {
    "Id": "ay",
    "Service": "s",
    "Class": "s",
    "LeaderPID": "u",
    "LeaderPIDFD": "h",
    "LeaderPIDFDID": "t",
    "RootDirectory": "s",
    "NetworkInterfaces": "ai",
    "VSockCID": "u",
    "SSHAddress": "s",
    "SSHPrivateKeyPath": "s",
}


async def _parse_ex(call: Call, name: str, properties: list[Any]) -> tuple[Registration, Extras]:
    """The a(sv) of RegisterMachineEx/CreateMachineEx, checked in upstream's (v259) order."""
    if not machine_name_is_valid(name):
        raise invalid_args("Invalid machine name")
    values: dict[str, Any] = {}
    for key, variant in properties:
        expected = _EX_TYPES.get(key)
        if expected is None:
            raise invalid_args(f"Unknown property '{key}'")
        if variant.signature != expected:
            if key == "Id":
                raise invalid_args("Invalid machine ID parameter")
            raise from_errno(errno.ENXIO)  # sd_bus_message_read() of the wrong type
        value = variant.value
        if key == "Id" and len(value) not in (0, 16):
            raise invalid_args("Invalid machine ID parameter")
        if key == "NetworkInterfaces":
            for ifindex in value:
                if ifindex <= 0:
                    raise invalid_args(f"Invalid network interface index {ifindex}")
        if key == "VSockCID" and (value < 3 or value == VMADDR_CID_ANY):
            raise invalid_args("JSON field 'vSockCid' is not a regular VSOCK CID.")
        values[key] = value
    class_name = values.get("Class", "")
    if MachineClass.from_string(class_name) is None:
        raise invalid_args("Invalid machine class parameter")
    root = values.get("RootDirectory", "")
    if root and (not root.startswith("/") or len(root) >= PATH_MAX):
        raise invalid_args("Root directory must be empty or an absolute path")
    if services(call).registry.find(name) is not None:
        raise machine_exists(name)
    leader_ref = _leader_from_ex(call, values)
    if leader_ref is None:
        leader = (await call.credentials()).pid
    else:
        leader = leader_ref.pid
    if leader == 1:
        if leader_ref is not None:
            leader_ref.close()
        raise invalid_args("Invalid leader PID")
    req = validate_registration(
        name,
        bytes(values.get("Id", b"")),
        values.get("Service", ""),
        class_name,
        leader,
        root,
        values.get("NetworkInterfaces", ()),
    )
    extras = Extras(
        leader_ref=leader_ref,
        vsock_cid=values.get("VSockCID", 0),
        ssh_address=values.get("SSHAddress", ""),
        ssh_private_key_path=values.get("SSHPrivateKeyPath", ""),
    )
    return req, extras


def _leader_from_ex(call: Call, values: dict[str, Any]) -> PidRef | None:
    leader_pid = values.get("LeaderPID", 0)
    leader_pidfdid = values.get("LeaderPIDFDID", 0)
    if "LeaderPIDFD" in values:
        index = values["LeaderPIDFD"]
        fds = call.message.unix_fds
        if not isinstance(index, int) or not 0 <= index < len(fds):
            raise invalid_args("Invalid LeaderPIDFD")
        try:
            ref = PidRef.from_pidfd(fds[index])
        except OSError as exc:
            raise from_errno(exc.errno or errno.EBADF, f"Failed to parse PIDFD {fds[index]}: %m") from None
        if leader_pid > 0 and ref.pid != leader_pid:
            ref.close()
            raise invalid_args("LeaderPID and LeaderPIDFD refer to different processes")
        if leader_pidfdid > 0 and ref.fd_id and ref.fd_id != leader_pidfdid:
            ref.close()
            raise invalid_args("LeaderPIDFDID does not match the inode number of LeaderPIDFD")
        return ref
    if leader_pid > 0 and leader_pidfdid > 0:
        try:
            ref = PidRef.pin(leader_pid)
        except OSError as exc:
            raise from_errno(
                exc.errno or errno.ESRCH, f"Failed to pin process {leader_pid} by PIDFDID {leader_pidfdid}: %m"
            ) from None
        if ref.fd_id and ref.fd_id != leader_pidfdid:
            ref.close()
            raise from_errno(errno.ESRCH, f"Failed to pin process {leader_pid} by PIDFDID {leader_pidfdid}: %m")
        return ref
    if leader_pid > 0 or leader_pidfdid > 0:
        raise invalid_args(
            "Both LeaderPID and LeaderPIDFDID must be specified to identify the leader process by PIDFDID"
        )
    return None


async def _unregister_machine(call: Call, _obj: None, name: str) -> Body:
    await machine_actions.unregister(services(call), services(call).registry.get(name), authorizer(call))
    return []


Answer = Body | WithFds | Awaitable[Body] | Awaitable[WithFds]


def _on_machine(handler: Callable[..., Answer]) -> Callable[..., Answer]:
    """A Manager forwarder: look the machine up by name, then run the Machine method."""

    def forward(call: Call, _obj: None, name: str, *rest: object) -> Answer:
        machine: Machine = services(call).registry.get(name)
        return handler(call, machine, *rest)

    return forward


def _map_from_user(call: Call, _obj: None, name: str, inner: int) -> Body:
    return _map_from(call, name, inner, "uid")


def _map_from_group(call: Call, _obj: None, name: str, inner: int) -> Body:
    return _map_from(call, name, inner, "gid")


def _map_from(call: Call, name: str, inner: int, kind: Kind) -> Body:
    if not id_is_valid(inner):  # checked before the lookup, as 252 does
        raise invalid_args(f"Invalid {'user' if kind == 'uid' else 'group'} ID {inner}")
    return [map_from_machine(services(call).registry.get(name), inner, kind)]


def _map_to_user(call: Call, _obj: None, outer: int) -> Body:
    machine, inner = map_to_machine(services(call).uid_index, outer)
    return [machine.name, machine.object_path, inner]


def _map_to_group(call: Call, _obj: None, outer: int) -> Body:
    machine, inner = map_to_machine(services(call).gid_index, outer)
    return [machine.name, machine.object_path, inner]


MACHINE_ARGS: Final = "s name, ay id, s service, s class, u leader, s root_directory"


def _interface() -> Interface:
    return Interface(
        INTERFACE,
        [
            Property("PoolPath", "s", lambda _m: str(image_paths.current().pool), emits_change="false"),
            Property("PoolUsage", "t", lambda _m: pool_usage(), emits_change="false"),
            Property("PoolLimit", "t", lambda _m: pool_limit(), emits_change="false"),
            Method("GetMachine", _get_machine, args("s name"), args("o machine")),
            Method("GetImage", images.get_image, args("s name"), args("o image")),
            Method("GetMachineByPID", _get_machine_by_pid, args("u pid"), args("o machine")),
            Method("ListMachines", _list_machines, (), args("a(ssso) machines")),
            Method("ListImages", images.list_images, (), args("a(ssbttto) images")),
            Method(
                "CreateMachine",
                _create_machine,
                args(f"{MACHINE_ARGS}, a(sv) scope_properties"),
                args("o path"),
                privileged=True,
            ),
            Method(
                "CreateMachineWithNetwork",
                _create_machine_with_network,
                args(f"{MACHINE_ARGS}, ai ifindices, a(sv) scope_properties"),
                args("o path"),
                privileged=True,
            ),
            Method(
                "CreateMachineEx",
                _create_machine_ex,
                args("s name, a(sv) properties, a(sv) scope_properties"),
                args("o path"),
                privileged=True,
            ),
            Method("RegisterMachine", _register_machine, args(MACHINE_ARGS), args("o path"), privileged=True),
            Method(
                "RegisterMachineWithNetwork",
                _register_machine_with_network,
                args(f"{MACHINE_ARGS}, ai ifindices"),
                args("o path"),
                privileged=True,
            ),
            Method(
                "RegisterMachineEx",
                _register_machine_ex,
                args("s name, a(sv) properties"),
                args("o path"),
                privileged=True,
            ),
            Method("UnregisterMachine", _unregister_machine, args("s name")),
            Method("TerminateMachine", _on_machine(terminate), args("s id")),
            Method("KillMachine", _on_machine(kill), args("s name, s who, i signal")),
            Method("GetMachineAddresses", _on_machine(get_addresses), args("s name"), args("a(iay) addresses")),
            Method(
                "GetMachineSSHInfo",
                _on_machine(get_ssh_info),
                args("s name"),
                args("s ssh_address, s ssh_private_key_path"),
            ),
            Method("GetMachineOSRelease", _on_machine(get_os_release), args("s name"), args("a{ss} fields")),
            Method("OpenMachinePTY", _on_machine(open_pty), args("s name"), args("h pty, s pty_path"), privileged=True),
            Method("OpenMachineLogin", _on_machine(open_login), args("s name"), args("h pty, s pty_path")),
            Method(
                "OpenMachineShell",
                _on_machine(open_shell),
                args("s name, s user, s path, as args, as environment"),
                args("h pty, s pty_path"),
            ),
            Method(
                "BindMountMachine",
                _on_machine(bind_mount),
                args("s name, s source, s destination, b read_only, b mkdir"),
            ),
            Method("CopyFromMachine", _on_machine(copy_files), args("s name, s source, s destination")),
            Method("CopyToMachine", _on_machine(copy_files), args("s name, s source, s destination")),
            Method(
                "CopyFromMachineWithFlags",
                _on_machine(copy_files_with_flags),
                args("s name, s source, s destination, t flags"),
            ),
            Method(
                "CopyToMachineWithFlags",
                _on_machine(copy_files_with_flags),
                args("s name, s source, s destination, t flags"),
            ),
            Method("OpenMachineRootDirectory", _on_machine(open_root_directory), args("s name"), args("h fd")),
            Method("GetMachineUIDShift", _on_machine(get_uid_shift), args("s name"), args("u shift")),
            Method("RemoveImage", images.on_image(images.remove), args("s name")),
            Method("RenameImage", images.on_image(images.rename), args("s name, s new_name")),
            Method("CloneImage", images.on_image(images.clone), args("s name, s new_name, b read_only")),
            Method("MarkImageReadOnly", images.on_image(images.mark_read_only), args("s name, b read_only")),
            Method("GetImageHostname", images.on_image(images.get_hostname), args("s name"), args("s hostname")),
            Method("GetImageMachineID", images.on_image(images.get_machine_id), args("s name"), args("ay id")),
            Method(
                "GetImageMachineInfo",
                images.on_image(images.get_machine_info),
                args("s name"),
                args("a{ss} machine_info"),
            ),
            Method(
                "GetImageOSRelease", images.on_image(images.get_os_release), args("s name"), args("a{ss} os_release")
            ),
            Method("SetPoolLimit", images.set_pool_limit, args("t size")),
            Method("SetImageLimit", images.on_image(images.set_limit), args("s name, t size")),
            Method("CleanPool", images.clean_pool, args("s mode"), args("a(st) images")),
            Method("MapFromMachineUser", _map_from_user, args("s name, u uid_inner"), args("u uid_outer")),
            Method(
                "MapToMachineUser",
                _map_to_user,
                args("u uid_outer"),
                args("s machine_name, o machine_path, u uid_inner"),
            ),
            Method("MapFromMachineGroup", _map_from_group, args("s name, u gid_inner"), args("u gid_outer")),
            Method(
                "MapToMachineGroup",
                _map_to_group,
                args("u gid_outer"),
                args("s machine_name, o machine_path, u gid_inner"),
            ),
            Signal("MachineNew", (Arg("s", "machine"), Arg("o", "path"))),
            Signal("MachineRemoved", (Arg("s", "machine"), Arg("o", "path"))),
        ],
    )


MANAGER_INTERFACE: Final = _interface()


def machine_signal(member: str, machine: Machine) -> Message:
    return Message.new_signal(PATH, INTERFACE, member, "so", [machine.name, machine.object_path])
