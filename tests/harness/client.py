"""A dbus-fast client of the test bus, for tests that need more than busctl (fds, timing, signals)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus

from .system import BUS_ADDRESS


async def connect(unix_fds: bool = False) -> MessageBus:
    return await MessageBus(bus_address=BUS_ADDRESS, bus_type=BusType.SYSTEM, negotiate_unix_fd=unix_fds).connect()


def manager_call(member: str, signature: str = "", body: Sequence[object] = (), fds: Sequence[int] = ()) -> Message:
    """A method call to org.freedesktop.machine1.Manager."""
    return Message(
        destination="org.freedesktop.machine1",
        path="/org/freedesktop/machine1",
        interface="org.freedesktop.machine1.Manager",
        member=member,
        signature=signature,
        body=list(body),
        unix_fds=list(fds),
    )


async def call_each(calls: Sequence[Message], timeout: float = 30) -> list[Message | None]:
    """Each call in turn on one fresh connection (fd passing on), awaiting every reply."""
    bus = await connect(unix_fds=True)
    try:
        return [await asyncio.wait_for(bus.call(call), timeout) for call in calls]
    finally:
        bus.disconnect()


async def add_match(bus: MessageBus, rule: str) -> None:
    await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[rule],
        )
    )
