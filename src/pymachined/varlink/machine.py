"""io.systemd.Machine on /run/systemd/machine/io.systemd.Machine (newer machined's Varlink API).

Each method parses its parameters as upstream's dispatch tables do, finds the machine, and runs
the same action as its D-Bus twin (`pymachined.actions`), with polkit asked for the peer.
"""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from functools import cache
from typing import Any, Final

from ..actions import Authorize, Services
from ..actions import machines as actions
from ..errors import ErrorKind, MachineError
from ..leader import PidRef
from ..lifecycle import Caller, Extras
from ..machine import Machine, MachineClass
from ..names import HOST_MACHINE, machine_name_is_valid
from ..ops.addresses import LocalAddress, machine_addresses
from ..ops.os_release import NO_OS_RELEASE as NO_OS_RELEASE_TEXT
from ..ops.os_release import machine_os_release
from ..ops.uid_shift import uid_shift
from ..ops.usermap import id_is_valid, map_from_machine, map_to_machine
from ..registry import validate_registration
from .idl_files import read_idl
from .server import (
    EXPECTED_MORE,
    INVALID_PARAMETER,
    PERMISSION_DENIED,
    Handler,
    Interface,
    Parameters,
    VarlinkCall,
    VarlinkError,
)

INTERFACE: Final = "io.systemd.Machine"
NO_SUCH_MACHINE: Final = f"{INTERFACE}.NoSuchMachine"
MACHINE_EXISTS: Final = f"{INTERFACE}.MachineExists"
NO_PRIVATE_NETWORKING: Final = f"{INTERFACE}.NoPrivateNetworking"
NO_OS_RELEASE: Final = f"{INTERFACE}.NoOSReleaseInformation"
NO_UID_SHIFT: Final = f"{INTERFACE}.NoUIDShift"
NOT_AVAILABLE: Final = f"{INTERFACE}.NotAvailable"
NOT_SUPPORTED: Final = f"{INTERFACE}.NotSupported"
NO_IPC: Final = f"{INTERFACE}.NoIPC"
NO_SUCH_USER: Final = f"{INTERFACE}.NoSuchUser"
NO_SUCH_GROUP: Final = f"{INTERFACE}.NoSuchGroup"
USER_IN_HOST_RANGE: Final = f"{INTERFACE}.UserInHostRange"
GROUP_IN_HOST_RANGE: Final = f"{INTERFACE}.GroupInHostRange"
TOO_MANY_OPERATIONS: Final = f"{INTERFACE}.TooManyOperations"
VMADDR_CID_ANY: Final = 2**32 - 1
VMADDR_CID_LOCAL: Final = 1
PID_MAX: Final = 2**31 - 1

# org.freedesktop.machine1 actions → the polkit authorizer of one call
AuthorizerFactory = Callable[[VarlinkCall, bool], Authorize]


def invalid(parameter: str) -> VarlinkError:
    return VarlinkError(INVALID_PARAMETER, {"parameter": parameter})


def _translate(error: MachineError, invalid_field: str | None = None) -> Exception:
    """A core error as io.systemd.Machine names it."""
    kind = error.kind
    if kind is ErrorKind.NO_SUCH_MACHINE or kind is ErrorKind.NO_MACHINE_FOR_PID:
        return VarlinkError(NO_SUCH_MACHINE)
    if kind is ErrorKind.MACHINE_EXISTS:
        return VarlinkError(MACHINE_EXISTS)
    if kind is ErrorKind.NOT_SUPPORTED:
        return VarlinkError(NOT_SUPPORTED)
    if kind is ErrorKind.LIMITS_EXCEEDED:
        return VarlinkError(TOO_MANY_OPERATIONS)
    if kind is ErrorKind.NO_PRIVATE_NETWORKING:
        return VarlinkError(NO_PRIVATE_NETWORKING)
    if kind is ErrorKind.INVALID_ARGS and invalid_field is not None:
        return invalid(invalid_field)
    if kind is ErrorKind.INVALID_ARGS:
        return OSError(errno.EINVAL, error.message)
    return error


def _address(address: LocalAddress) -> Parameters:
    value: Parameters = {}
    if address.ifindex:
        value["ifindex"] = address.ifindex
    value["family"] = address.family
    value["address"] = list(address.address)
    return value


def _metadata_error(error: MachineError, missing: str) -> Exception:
    """A metadata failure under acquireMetadata=yes: `missing`, NotAvailable, or the errno."""
    if error.kind is ErrorKind.NOT_SUPPORTED:
        return VarlinkError(NOT_AVAILABLE)
    if error.kind is ErrorKind.NO_PRIVATE_NETWORKING:
        return VarlinkError(NO_PRIVATE_NETWORKING)
    if missing == NO_UID_SHIFT and error.kind is ErrorKind.ERRNO and error.errno == errno.ENXIO:
        return VarlinkError(NO_UID_SHIFT)
    if missing == NO_OS_RELEASE and error.kind is ErrorKind.FAILED and error.message == NO_OS_RELEASE_TEXT:
        return VarlinkError(NO_OS_RELEASE)
    if error.kind is ErrorKind.FAILED:
        return OSError(errno.EIO, error.message)
    return error


@cache
def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


def process_id(pid: int, ref: PidRef | None) -> Parameters:
    """A ProcessId: the pid, the pidfd's inode number when known, and this boot's id."""
    value: Parameters = {"pid": pid}
    fd_id = ref.fd_id if ref is not None else 0
    if not fd_id:
        with suppress(OSError):
            pinned = PidRef.pin(pid)
            fd_id = pinned.fd_id
            pinned.close()
    if fd_id:
        value["pidfdId"] = fd_id
    value["bootId"] = boot_id()
    return value


def allows_interaction(parameters: Parameters) -> bool:
    """The polkit field every privileged method takes."""
    return parameters.get("allowInteractiveAuthentication") is True


def reject_nulls(parameters: Parameters) -> None:
    """machined's dispatch tables take no explicit null, nullable in the IDL or not."""
    for key, value in parameters.items():
        if value is None:
            raise invalid(key)


def strict(handler: Handler) -> Handler:
    """The handler behind reject_nulls()."""

    def checked(call: VarlinkCall, parameters: Parameters) -> Any:
        reject_nulls(parameters)
        return handler(call, parameters)

    return checked


def _pid_field(value: Any, field: str) -> int:
    pid = value.get("pid") if isinstance(value, dict) else None
    if type(pid) is not int or not 0 <= pid <= PID_MAX:
        raise invalid(field)
    return pid


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class MachineApi:
    """The io.systemd.Machine methods over the daemon's services."""

    def __init__(self, services: Services, authorizer: AuthorizerFactory, user_scope: bool = False) -> None:
        self.services = services
        self.authorizer = authorizer
        self.user_scope = user_scope

    def authorize(
        self, call: VarlinkCall, parameters: Parameters, machine: Machine | None = None, owner_may: bool = False
    ) -> Authorize:
        """Polkit for the peer, with the machine's `owner_uid` in the details (v258); the owner passes
        without asking where `owner_may` (v258); a per-user instance asks nobody."""
        ask = self.authorizer(call, allows_interaction(parameters))

        async def authorize(action: str, details: dict[str, str]) -> None:
            if self.user_scope:
                return
            if machine is not None:
                if owner_may and call.peer.uid == machine.uid:
                    return
                details = {**details, "owner_uid": str(machine.uid)}
            await ask(action, details)

        return authorize

    # lookup

    def find(self, call: VarlinkCall, parameters: Parameters) -> Machine:
        """The machine named by `name` and/or `pid` (0: the caller's own); both must agree."""
        registry = self.services.registry
        by_name = by_pid = None
        name = parameters.get("name")
        if name is not None:
            if name != HOST_MACHINE and not machine_name_is_valid(name):
                raise invalid("name")
            by_name = registry.find(name)
            if by_name is None:
                raise VarlinkError(NO_SUCH_MACHINE)
        if parameters.get("pid") is not None:
            pid = _pid_field(parameters["pid"], "pid") or call.peer.pid
            by_pid = registry.find_by_pid(pid)
            if by_pid is None:
                raise VarlinkError(NO_SUCH_MACHINE)
        if by_name is not None and by_pid is not None and by_name is not by_pid:
            raise VarlinkError(NO_SUCH_MACHINE)
        machine = by_name or by_pid
        if machine is None:
            raise VarlinkError(NO_SUCH_MACHINE)
        return machine

    # methods

    async def register(self, call: VarlinkCall, p: Parameters) -> Parameters:
        name = p["name"]
        if not machine_name_is_valid(name):
            raise invalid("name")
        machine_id = b""
        if p.get("id") is not None:
            try:
                machine_id = uuid.UUID(hex=p["id"]).bytes
            except ValueError:
                raise invalid("id") from None
        class_name = p["class"]
        if MachineClass.from_string(class_name) in (None, MachineClass.HOST):
            raise invalid("class")
        leader = self._leader(p)
        root = p.get("rootDirectory")
        if root is not None and not (root.startswith("/") and len(root) < 4096):
            raise invalid("rootDirectory")
        netif = p.get("ifIndices") or []
        if any(not 0 < i <= PID_MAX for i in netif):
            raise invalid("ifIndices")
        vsock_cid = p.get("vSockCid")
        if vsock_cid is not None and not 3 <= vsock_cid < VMADDR_CID_ANY:
            raise invalid("vSockCid")
        allocate = p.get("allocateUnit") is True
        details = {"machine": name, "owner_uid": str(call.peer.uid), "class": class_name}
        await self._run(self.authorize(call, p)("create-machine" if allocate else "register-machine", details))
        if leader is None:
            leader = call.peer.pid
        try:
            actions.check_leader_owner(self.services, leader, call.peer.uid)
        except MachineError:
            raise VarlinkError(PERMISSION_DENIED) from None
        if self.services.registry.find(name) is not None:
            raise VarlinkError(MACHINE_EXISTS)
        if self.services.registry.by_leader.get(leader) is not None:
            raise OSError(errno.EEXIST, f"process {leader} already leads a machine")
        try:
            leader_ref = PidRef.pin(leader)
        except OSError:
            raise invalid("leader") from None
        extras = Extras(
            leader_ref=leader_ref,
            vsock_cid=vsock_cid or 0,
            ssh_address=p.get("sshAddress") or "",
            ssh_private_key_path=p.get("sshPrivateKeyPath") or "",
        )
        caller = Caller(uid=call.peer.uid, pid=call.peer.pid)
        try:
            req = validate_registration(name, machine_id, p.get("service") or "", class_name, leader, root or "", netif)
            if allocate:
                await (await self.services.lifecycle.create(req, [], caller, extras))
            else:
                self.services.lifecycle.register(req, caller, extras)
        except BaseException as error:
            if self.services.registry.find(name) is None:
                leader_ref.close()
            if isinstance(error, MachineError):
                raise _translate(error) from None
            raise
        return {}

    @staticmethod
    def _leader(p: Parameters) -> int | None:
        """`leader` and/or `leaderProcessId`: a live process other than PID 1, the same if both are given."""
        leader = p.get("leader")
        if leader is not None and (not 1 < leader <= PID_MAX or not _exists(leader)):
            raise invalid("leader")
        if p.get("leaderProcessId") is not None:
            pid = _pid_field(p["leaderProcessId"], "leaderProcessId")
            if pid <= 1 or (leader is not None and pid != leader) or not _exists(pid):
                raise invalid("leaderProcessId")
            leader = pid
        return leader

    async def unregister(self, call: VarlinkCall, p: Parameters) -> Parameters:
        machine = self.find(call, p)
        if machine.machine_class is MachineClass.HOST:
            return {}  # as machined: finalizing the host does nothing
        await self._run(actions.unregister(self.services, machine, self.authorize(call, p, machine, owner_may=True)))
        return {}

    async def terminate(self, call: VarlinkCall, p: Parameters) -> Parameters:
        machine = self.find(call, p)
        await self._run(actions.terminate(self.services, machine, self.authorize(call, p, machine, owner_may=True)))
        return {}

    async def kill(self, call: VarlinkCall, p: Parameters) -> Parameters:
        signum = p["signal"]
        if not 1 <= signum <= 64:
            raise invalid("signal")
        machine = self.find(call, p)
        whom = p.get("whom") or "all"
        if whom not in ("leader", "all"):
            raise invalid("whom")
        await self._run(
            actions.kill(self.services, machine, whom, signum, self.authorize(call, p, machine, owner_may=True))
        )
        return {}

    async def list(self, call: VarlinkCall, p: Parameters) -> AsyncIterator[Parameters]:
        metadata = p.get("acquireMetadata") or "no"
        if p.get("name") is not None or p.get("pid") is not None:
            machines = [self.find(call, p)]
        elif not call.more:
            raise VarlinkError(EXPECTED_MORE)
        else:
            machines = list(self.services.registry)
            if not machines:
                raise VarlinkError(NO_SUCH_MACHINE)
        if metadata == "no":
            for machine in machines:
                yield self.describe(machine)
            return
        # all machines' metadata in one trip to a worker thread: netlink sockets and files, no fork
        graceful = metadata == "graceful"
        collected = await asyncio.to_thread(lambda: [self._metadata(m, graceful) for m in machines])
        for machine, extra in zip(machines, collected, strict=True):
            if isinstance(extra, Exception):
                raise extra  # under "yes": what came before is sent, then this error
            yield {**self.describe(machine), **extra}

    def describe(self, machine: Machine) -> Parameters:
        """One List reply in machined's field order, empty fields left out."""
        reply: Parameters = {"name": machine.name}
        if machine.id and machine.id != bytes(16):
            reply["id"] = machine.id.hex()
        reply["class"] = machine.machine_class.value
        for key, text in (
            ("service", machine.service),
            ("rootDirectory", machine.root_directory),
            ("unit", machine.unit),
        ):
            if text:
                reply[key] = text
        if machine.leader:
            reply["leader"] = process_id(machine.leader, machine.leader_ref)
        if machine.timestamp.is_set():
            reply["timestamp"] = {"realtime": machine.timestamp.realtime, "monotonic": machine.timestamp.monotonic}
        vsock_cid = VMADDR_CID_LOCAL if machine.machine_class is MachineClass.HOST else machine.vsock_cid
        if vsock_cid:
            reply["vSockCid"] = vsock_cid
        if machine.ssh_address:
            reply["sshAddress"] = machine.ssh_address
        if machine.ssh_private_key_path:
            reply["sshPrivateKeyPath"] = machine.ssh_private_key_path
        return reply

    def _metadata(self, machine: Machine, graceful: bool) -> Parameters | Exception:
        """Addresses, os-release and UID shift (blocking); under "yes" the first failure instead."""
        extra: Parameters = {}
        try:
            found = machine_addresses(machine, self.services.addresses)
            if found:
                extra["addresses"] = [_address(a) for a in found]
        except MachineError as error:
            if not graceful:
                return _metadata_error(error, NO_PRIVATE_NETWORKING)
        try:
            fields = machine_os_release(machine, self.services.os_release)
            if fields:
                extra["OSRelease"] = [f"{key}={value}" for key, value in fields.items()]
        except MachineError as error:
            if not graceful:
                return _metadata_error(error, NO_OS_RELEASE)
        try:
            extra["UIDShift"] = uid_shift(machine)
        except MachineError as error:
            if not graceful:
                return _metadata_error(error, NO_UID_SHIFT)
        return extra

    async def open(self, call: VarlinkCall, p: Parameters) -> Parameters:
        mode = p["mode"]
        machine = self.find(call, p)
        authorize = self.authorize(call, p, machine, owner_may=True)
        if mode == "tty":
            master, path = await self._run(actions.open_pty(machine, authorize))
        elif mode == "login":
            master, path = await self._open_ipc(actions.open_login(self.services, machine, authorize))
        else:
            program = p.get("path") or ""
            args = p.get("args") or ([program] if program else [])
            request = actions.open_shell(
                self.services,
                machine,
                p.get("user") or "root",
                program,
                args,
                p.get("environment") or [],
                authorize,
            )
            master, path = await self._open_ipc(request)
        call.fds.append(master)
        return {"ptyFileDescriptor": 0, "ptyPath": path}

    async def _open_ipc(self, action: Awaitable[tuple[int, str]]) -> tuple[int, str]:
        """Login and shell reach the machine's systemd over its bus: none there is NoIPC."""
        try:
            return await action
        except MachineError as error:
            if error.kind is ErrorKind.ERRNO and error.errno == errno.ENOENT:
                raise VarlinkError(NO_IPC) from None
            raise _translate(error) from None

    async def map_from(self, call: VarlinkCall, p: Parameters) -> Parameters:
        machine = self.find(call, p)
        if machine.machine_class is not MachineClass.CONTAINER:
            raise VarlinkError(NOT_SUPPORTED)
        reply: Parameters = {}
        for key, error in (("uid", NO_SUCH_USER), ("gid", NO_SUCH_GROUP)):
            inner = p.get(key)
            if inner is None:
                continue
            if type(inner) is not int or not id_is_valid(inner):
                raise invalid(key)
            try:
                reply[key] = map_from_machine(machine, inner, key)  # type: ignore[arg-type]
            except MachineError as exc:
                if exc.kind in (ErrorKind.NO_SUCH_USER_MAPPING, ErrorKind.NO_SUCH_GROUP_MAPPING):
                    raise VarlinkError(error) from None
                raise _translate(exc) from None
        return reply

    async def map_to(self, call: VarlinkCall, p: Parameters) -> Parameters:
        reply: Parameters = {}
        owner: Machine | None = None
        indexes = (
            ("uid", self.services.uid_index, NO_SUCH_USER, USER_IN_HOST_RANGE),
            ("gid", self.services.gid_index, NO_SUCH_GROUP, GROUP_IN_HOST_RANGE),
        )
        for key, index, missing, in_host_range in indexes:
            outer = p.get(key)
            if outer is None:
                continue
            if type(outer) is not int or not id_is_valid(outer):
                raise invalid(key)
            if outer < 0x10000:
                raise VarlinkError(in_host_range)
            try:
                machine, inner = map_to_machine(index, outer)
            except MachineError:
                raise VarlinkError(missing) from None
            if owner is not None and machine is not owner:
                raise VarlinkError(NO_SUCH_MACHINE)
            owner = machine
            reply[key] = inner
        if owner is None:
            raise VarlinkError(NO_SUCH_MACHINE)
        reply["machineName"] = owner.name
        return reply

    async def bind_mount(self, call: VarlinkCall, p: Parameters) -> Parameters:
        machine = self.find(call, p)
        source = p["source"]
        if not source.startswith("/"):
            raise invalid("source")
        destination = p.get("destination") or source
        if not destination.startswith("/"):
            raise invalid("destination")
        action = actions.bind_mount(
            machine,
            source,
            destination,
            bool(p.get("readOnly")),
            bool(p.get("mkdir")),
            self.authorize(call, p, machine),
        )
        await self._run(action)
        return {}

    def copy(self, to_container: bool) -> Handler:
        async def handler(call: VarlinkCall, p: Parameters) -> Parameters:
            try:  # machined refuses before it reads the parameters
                self.services.operations.check()
            except MachineError as error:
                raise _translate(error) from None
            machine = self.find(call, p)
            source = p["source"]
            if not source.startswith("/"):
                raise invalid("source")
            destination = p.get("destination") or source
            if not destination.startswith("/"):
                raise invalid("destination")
            flags = 1 if p.get("replace") else 0  # MACHINE_COPY_REPLACE
            await self._run(
                actions.copy_files(
                    self.services, machine, source, destination, to_container, flags, self.authorize(call, p, machine)
                )
            )
            return {}

        return handler

    async def open_root_directory(self, call: VarlinkCall, p: Parameters) -> Parameters:
        machine = self.find(call, p)
        fd = await self._run(actions.open_root_directory(machine, self.authorize(call, p, machine)))
        call.fds.append(fd)
        return {"fileDescriptor": 0}

    @staticmethod
    async def _run(action: Awaitable[Any], invalid_field: str | None = None) -> Any:
        try:
            return await action
        except MachineError as error:
            raise _translate(error, invalid_field) from None

    def interface(self) -> Interface:
        methods: dict[str, Handler] = {
            "Register": self.register,
            "Unregister": self.unregister,
            "Terminate": self.terminate,
            "Kill": self.kill,
            "List": self.list,
            "Open": self.open,
            "MapFrom": self.map_from,
            "MapTo": self.map_to,
            "BindMount": self.bind_mount,
            "CopyFrom": self.copy(to_container=False),
            "CopyTo": self.copy(to_container=True),
            "OpenRootDirectory": self.open_root_directory,
        }
        return Interface(INTERFACE, read_idl(INTERFACE), {name: strict(h) for name, h in methods.items()})
