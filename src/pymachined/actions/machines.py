"""Machine actions: terminate, kill, unregister, open a PTY, login or shell, bind, copy, open the root."""

from __future__ import annotations

import asyncio
import os
from typing import Final

from ..errors import ErrorKind, MachineError
from ..lifecycle import validate_kill
from ..machine import Machine, MachineClass
from ..operations import TOO_MANY_COPIES
from ..ops import bind, copy, pty, shell
from ..ops.addresses import LocalAddress, machine_addresses
from ..ops.os_release import cached_os_release as cached
from ..ops.os_release import machine_os_release
from ..ops.root import open_root
from ..ops.uid_shift import uid_shift
from ..ops.usermap import process_owned_by
from . import Authorize, Services

REGISTER_FOR_OTHERS: Final = "Only root may register machines for other users"


def check_leader_owner(services: Services, leader: int, caller_uid: int) -> None:
    """Who may register which leader (v258): root any; others only processes they own or whose user
    namespace they own. A per-user instance registers only its user's processes, whoever asks."""
    owner = os.getuid() if services.user_scope else caller_uid
    if owner != 0 and not process_owned_by(leader, owner):
        raise MachineError(ErrorKind.ACCESS_DENIED, REGISTER_FOR_OTHERS)


async def terminate(services: Services, machine: Machine, authorize: Authorize) -> None:
    await authorize("manage-machines", {"machine": machine.name, "verb": "terminate"})
    await services.lifecycle.terminate(machine)


async def kill(services: Services, machine: Machine, who: str, signum: int, authorize: Authorize) -> None:
    target = validate_kill(who, signum)
    await authorize("manage-machines", {"machine": machine.name, "verb": "kill"})
    await services.lifecycle.kill(machine, target, signum)


async def unregister(services: Services, machine: Machine, authorize: Authorize) -> None:
    await authorize("manage-machines", {"machine": machine.name, "verb": "unregister"})
    if services.registry.find(machine.name) is machine:  # it may have gone while polkit was asked
        services.lifecycle.unregister(machine)


def addresses(services: Services, machine: Machine) -> list[LocalAddress]:
    return machine_addresses(machine, services.addresses)


def cached_os_release(services: Services, machine: Machine) -> dict[str, str] | None:
    """The os-release fields if known and unchanged (no file system access), else None: use os_release()."""
    return cached(machine, services.os_release)


async def os_release(services: Services, machine: Machine) -> dict[str, str]:
    return await asyncio.to_thread(machine_os_release, machine, services.os_release)


async def open_root_directory(machine: Machine, authorize: Authorize) -> int:
    await authorize("manage-machines", {"machine": machine.name, "verb": "open_root_directory"})
    return open_root(machine)


def _host_variant(machine: Machine, action: str) -> str:
    return f"host-{action}" if machine.machine_class is MachineClass.HOST else action


async def open_pty(machine: Machine, authorize: Authorize) -> tuple[int, str]:
    await authorize(_host_variant(machine, "open-pty"), {"machine": machine.name})
    return await asyncio.to_thread(pty.open_pty, machine)


async def open_login(services: Services, machine: Machine, authorize: Authorize) -> tuple[int, str]:
    await authorize(_host_variant(machine, "login"), {"machine": machine.name, "verb": "login"})
    master, path = await asyncio.to_thread(pty.open_pty, machine)
    try:
        await shell.start_getty(machine, services.bus, path)
    except BaseException:
        os.close(master)
        raise
    return master, path


async def open_shell(
    services: Services,
    machine: Machine,
    user: str,
    path: str,
    argv: list[str],
    environment: list[str],
    authorize: Authorize,
) -> tuple[int, str]:
    request = shell.validate_shell_request(user, path, argv, environment)
    details = {"machine": machine.name, "user": request.user, "program": request.path}
    await authorize(_host_variant(machine, "shell"), details)
    master, pty_path = await asyncio.to_thread(pty.open_pty, machine)
    try:
        await shell.start_shell(machine, services.bus, master, pty_path, request)
    except BaseException:
        os.close(master)
        raise
    return master, pty_path


async def bind_mount(
    machine: Machine, source: str, destination: str, read_only: bool, mkdir: bool, authorize: Authorize
) -> None:
    source, destination = bind.validate_bind_request(machine, source, destination)
    await authorize("manage-machines", {"machine": machine.name, "verb": "bind", "src": source, "dest": destination})
    bind.check_bind_uid_shift(machine)
    await asyncio.to_thread(bind.bind_mount, machine, source, destination, read_only, mkdir)


async def copy_files(
    services: Services,
    machine: Machine,
    source: str,
    destination: str,
    to_container: bool,
    flags: int,
    authorize: Authorize,
) -> None:
    operations = services.operations
    operations.check(TOO_MANY_COPIES)
    source, destination = copy.validate_copy_request(machine, source, destination, flags)
    await authorize("manage-machines", {"machine": machine.name, "verb": "copy", "src": source, "dest": destination})
    shift = uid_shift(machine)  # 252 returns a complex mapping's ENXIO raw here
    container_path, host_path = (destination, source) if to_container else (source, destination)
    replace = bool(flags & copy.MACHINE_COPY_REPLACE)
    await operations.run(
        lambda: copy.copy_between(machine, container_path, host_path, to_container, replace, shift), TOO_MANY_COPIES
    )
