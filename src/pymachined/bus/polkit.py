"""Authorization through polkit, as machined asks it (root bypasses).

D-Bus callers are named to polkit by their unique bus name (252); Varlink peers, which have none, as
a unix-process (pid, start time, uid), as newer machined does.
"""

from __future__ import annotations

import enum
import os
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..actions import Authorize
from ..errors import DBUS_ERROR, ErrorKind, MachineError
from .dispatch import BusReplyError, Call

POLKIT: Final = "org.freedesktop.PolicyKit1"
ACTION_PREFIX: Final = "org.freedesktop.machine1."
CHECK_ALLOW_INTERACTION: Final = 1


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    CHALLENGE = "challenge"  # would be allowed after interactive authentication
    DENIED = "denied"


async def ask_polkit(
    bus: MessageBus, subject: list[Any], action: str, details: dict[str, str], interactive: bool
) -> Verdict:
    """CheckAuthorization for `subject` (kind, attributes); an absent polkit denies."""
    message = Message(
        destination=POLKIT,
        path="/org/freedesktop/PolicyKit1/Authority",
        interface="org.freedesktop.PolicyKit1.Authority",
        member="CheckAuthorization",
        signature="(sa{sv})sa{ss}us",
        body=[subject, ACTION_PREFIX + action, details, CHECK_ALLOW_INTERACTION if interactive else 0, ""],
    )
    reply = await bus.call(message)
    if reply is None:
        return Verdict.DENIED
    if reply.message_type is MessageType.ERROR:
        if reply.error_name == f"{DBUS_ERROR}.ServiceUnknown":
            return Verdict.DENIED
        raise BusReplyError(reply.error_name or f"{DBUS_ERROR}.Failed", reply.body[0] if reply.body else "")
    is_authorized, is_challenge, _details = reply.body[0]
    if is_authorized:
        return Verdict.ALLOWED
    return Verdict.CHALLENGE if is_challenge else Verdict.DENIED


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot), which polkit checks against the pid."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        data = stat.read()
    return int(data[data.rindex(b")") + 2 :].split()[19])


def unix_process_subject(pid: int, uid: int) -> list[Any]:
    try:
        start_time = process_start_time(pid)
    except (OSError, ValueError, IndexError):
        start_time = 0  # polkit looks it up itself
    return [
        "unix-process",
        {"pid": Variant("u", pid), "start-time": Variant("t", start_time), "uid": Variant("i", uid)},
    ]


async def check_authorization(call: Call, action: str, details: dict[str, str]) -> None:
    """Raise unless the D-Bus caller may do `action` (root and the daemon's own user always may)."""
    creds = await call.credentials()
    if creds.uid in (0, os.getuid()):
        return
    subject = ["system-bus-name", {"name": Variant("s", call.sender)}]
    verdict = await ask_polkit(call.dispatcher.bus, subject, action, details, call.allows_interactive_authorization)
    if verdict is Verdict.ALLOWED:
        return
    if verdict is Verdict.CHALLENGE:
        raise BusReplyError(f"{DBUS_ERROR}.InteractiveAuthorizationRequired", "Interactive authentication required.")
    raise BusReplyError(f"{DBUS_ERROR}.AccessDenied", "Permission denied")


def process_authorizer(bus: MessageBus, pid: int, uid: int, interactive: bool) -> Authorize:
    """Polkit for a local process (a Varlink peer): root and the daemon's own user bypass it."""

    async def authorize(action: str, details: dict[str, str]) -> None:
        if uid in (0, os.getuid()):
            return
        verdict = await ask_polkit(bus, unix_process_subject(pid, uid), action, details, interactive)
        if verdict is Verdict.CHALLENGE:
            raise MachineError(ErrorKind.INTERACTIVE_AUTHORIZATION_REQUIRED, "Interactive authentication required.")
        if verdict is Verdict.DENIED:
            raise MachineError(ErrorKind.ACCESS_DENIED, "Permission denied")

    return authorize
