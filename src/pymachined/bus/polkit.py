"""Authorization through polkit, as machined 252 asks it (root bypasses)."""

from __future__ import annotations

from typing import Final

from dbus_fast import Message, MessageType

from .dispatch import DBUS_ERROR, BusReplyError, Call

POLKIT: Final = "org.freedesktop.PolicyKit1"
ACTION_PREFIX: Final = "org.freedesktop.machine1."
CHECK_ALLOW_INTERACTION: Final = 1


async def check_authorization(call: Call, action: str, details: dict[str, str]) -> None:
    """Raise unless the caller may do `action` (root always may)."""
    creds = await call.credentials()
    if creds.uid == 0:
        return
    message = Message(
        destination=POLKIT,
        path="/org/freedesktop/PolicyKit1/Authority",
        interface="org.freedesktop.PolicyKit1.Authority",
        member="CheckAuthorization",
        signature="(sa{sv})sa{ss}us",
        body=[
            ["system-bus-name", {"name": _variant_s(call.sender)}],
            ACTION_PREFIX + action,
            details,
            CHECK_ALLOW_INTERACTION if call.allows_interactive_authorization else 0,
            "",
        ],
    )
    reply = await call.dispatcher.bus.call(message)
    if reply is None:
        raise BusReplyError(f"{DBUS_ERROR}.AccessDenied", "Permission denied")
    if reply.message_type is MessageType.ERROR:
        if reply.error_name == f"{DBUS_ERROR}.ServiceUnknown":
            raise BusReplyError(f"{DBUS_ERROR}.AccessDenied", "Permission denied")
        raise BusReplyError(reply.error_name or f"{DBUS_ERROR}.Failed", reply.body[0] if reply.body else "")
    is_authorized, is_challenge, _details = reply.body[0]
    if is_authorized:
        return
    if is_challenge:
        raise BusReplyError(f"{DBUS_ERROR}.InteractiveAuthorizationRequired", "Interactive authentication required.")
    raise BusReplyError(f"{DBUS_ERROR}.AccessDenied", "Permission denied")


def _variant_s(value: str):  # type: ignore[no-untyped-def]
    from dbus_fast import Variant

    return Variant("s", value)
