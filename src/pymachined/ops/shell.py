"""Login and shell sessions in machines: a PTY inside, then the machine's own systemd starts a getty or a shell.

The container's system bus is reached through /proc/<leader>/root (no helper process); the slave side
of the PTY comes from the master with TIOCGPTPEER. Both transports call `open_login`/`open_shell`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..errors import forwarded, from_errno, invalid_args
from ..machine import Machine, MachineClass

TIOCGPTPEER: Final = 0x5441
SYSTEMD: Final = "org.freedesktop.systemd1"
CONTAINER_BUS: Final = "run/dbus/system_bus_socket"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ARG_MAX: Final = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """OpenShell's arguments after 252's defaults: user, program, argv, environment."""

    user: str
    path: str
    args: list[str]
    environment: list[str]


def default_shell_script(user: str) -> str:
    # 252 substitutes the user verbatim; it is then a polkit-checked, root-approved request
    return (
        f'shell=$(getent passwd {user} 2>/dev/null | {{ IFS=: read _ _ _ _ _ _ x; echo "$x"; }})\n'
        'exec "${shell:-/bin/sh}" -l'
    )


def environment_is_valid(environment: Sequence[str]) -> bool:
    """strv_env_is_valid(): NAME=VALUE, a shell-style name, UTF-8, within ARG_MAX, no name twice."""
    seen: set[str] = set()
    for entry in environment:
        name, eq, value = entry.partition("=")
        if not eq or not _ENV_NAME.match(name) or name in seen:
            return False
        if len(entry) > ARG_MAX - 1 or "\0" in entry:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        seen.add(name)
    return True


def validate_shell_request(user: str, path: str, args: Sequence[str], environment: Sequence[str]) -> ShellRequest:
    """B.7 steps 1–5, in 252's order."""
    user = user or "root"
    if not path:
        path, argv = "/bin/sh", ["sh", "-c", default_shell_script(user)]
    else:
        if not path.startswith("/"):
            raise invalid_args(f"Specified path '{path}' is not absolute")
        argv = list(args) or [path]
    if not environment_is_valid(environment):
        raise invalid_args("Invalid environment assignments")
    return ShellRequest(user, path, argv, list(environment))


def pty_number(path: str) -> str:
    return path.removeprefix("/dev/pts/")


def open_peer(master: int) -> int:
    """The slave side of a PTY master, wherever its devpts instance lives."""
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


async def machine_bus(machine: Machine, host_bus: MessageBus) -> tuple[MessageBus, bool]:
    """A connection to the machine's system bus (the daemon's own for .host); True if it must be closed."""
    if machine.machine_class is MachineClass.HOST:
        return host_bus, False
    socket_path = f"/proc/{machine.leader}/root/{CONTAINER_BUS}"
    if not os.path.exists(socket_path):
        raise from_errno(errno.ENOENT, f"There is no system bus in container {machine.name}.")
    try:
        bus = await MessageBus(bus_address=f"unix:path={socket_path}", negotiate_unix_fd=True).connect()
    except OSError as exc:
        raise from_errno(
            exc.errno or errno.EIO, f"Failed to connect to the system bus of container {machine.name}: %m"
        ) from None
    except Exception as exc:  # authentication refused and the like
        raise from_errno(errno.EIO, f"Failed to connect to the system bus of container {machine.name}: {exc}") from None
    return bus, True


async def _call_systemd(bus: MessageBus, member: str, signature: str, body: list[Any], fds: list[int]) -> None:
    reply = await bus.call(
        Message(
            destination=SYSTEMD,
            path="/org/freedesktop/systemd1",
            interface="org.freedesktop.systemd1.Manager",
            member=member,
            signature=signature,
            body=body,
            unix_fds=fds,
        )
    )
    if reply is None:
        raise from_errno(errno.ECONNRESET)
    if reply.message_type is MessageType.ERROR:
        # systemd's answer goes to the client unchanged, as 252 forwards it
        raise forwarded(reply.error_name or "org.freedesktop.DBus.Error.Failed", reply.body[0] if reply.body else "")


async def start_getty(machine: Machine, host_bus: MessageBus, pty_path: str) -> None:
    """OpenLogin: container-getty@N.service on the machine's own systemd."""
    bus, close = await machine_bus(machine, host_bus)
    try:
        await _call_systemd(bus, "StartUnit", "ss", [f"container-getty@{pty_number(pty_path)}.service", "replace"], [])
    finally:
        if close:
            bus.disconnect()


async def start_shell(
    machine: Machine, host_bus: MessageBus, master: int, pty_path: str, request: ShellRequest
) -> None:
    """OpenShell: a transient container-shell@N.service on the PTY's slave side."""
    slave = open_peer(master)
    try:
        number = pty_number(pty_path)
        properties: list[list[Any]] = [
            ["Description", Variant("s", f"Shell for User {request.user}")],
            ["StandardInputFileDescriptor", Variant("h", 0)],
            ["StandardOutputFileDescriptor", Variant("h", 0)],
            ["StandardErrorFileDescriptor", Variant("h", 0)],
            ["SendSIGHUP", Variant("b", True)],
            ["IgnoreSIGPIPE", Variant("b", False)],
            ["KillMode", Variant("s", "mixed")],
            ["TTYPath", Variant("s", pty_path)],
            ["TTYReset", Variant("b", True)],
            ["UtmpIdentifier", Variant("s", f"pts/{number}")],
            ["UtmpMode", Variant("s", "user")],
            ["PAMName", Variant("s", "login")],
            ["WorkingDirectory", Variant("s", "-~")],
            ["User", Variant("s", request.user)],
        ]
        if request.environment:
            properties.append(["Environment", Variant("as", request.environment)])
        properties.append(["ExecStart", Variant("a(sasb)", [[request.path, request.args, True]])])
        bus, close = await machine_bus(machine, host_bus)
        try:
            await _call_systemd(
                bus,
                "StartTransientUnit",
                "ssa(sv)a(sa(sv))",
                [f"container-shell@{number}.service", "fail", properties, []],
                [slave],
            )
        finally:
            if close:
                bus.disconnect()
    finally:
        os.close(slave)
