"""The floor of any daemon built on dbus-fast and asyncio: a responder with no logic at all.

It owns org.freedesktop.machine1 and answers every method call with an object path, through one
dbus-fast message handler. The benchmark measures GetMachine against it as against the daemons, so the
report can say how much of pymachined's per-call time is its own and how much the library's.
"""

from __future__ import annotations

import asyncio
import sys

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

PREFIX = "/org/freedesktop/machine1/machine/"


async def serve(address: str) -> None:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()

    def on_message(msg: Message) -> Message | bool:
        if msg.message_type is not MessageType.METHOD_CALL:
            return False
        return Message.new_method_return(msg, "o", [PREFIX + str(msg.body[0] if msg.body else "x")])

    bus.add_message_handler(on_message)
    await bus.request_name("org.freedesktop.machine1")
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
