"""The floor of any daemon built on dbus-fast and asyncio: a responder with no logic at all.

It owns org.freedesktop.machine1 and answers, through one dbus-fast message handler, with canned replies
of the right signatures: RegisterMachine (MachineNew, then the object path), UnregisterMachine
(MachineRemoved, then an empty reply), ListMachines (the names registered), GetMachineOSRelease and
GetMachineAddresses (the same answer for every machine), anything else with an object path. No
validation, no state files, no cgroups, no credentials; fds negotiated with the bus, as the daemon
needs them. The benchmark runs the same workloads against it
as against the daemons, so the report can say how much of pymachined's time is its own and how much the
library's, the event loop's and the interpreter's.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

PATH = "/org/freedesktop/machine1"
MANAGER = "org.freedesktop.machine1.Manager"
PREFIX = PATH + "/machine/"
OS_RELEASE = {"ID": "debian", "VERSION_ID": "12"}
ADDRESSES = [[2, bytes([10, 0, 1, 2])]]


async def serve(address: str) -> None:
    # fds negotiated as the daemon must (OpenMachinePTY, OpenMachineRootDirectory and LeaderPIDFD pass
    # them); that alone makes dbus-fast read every message with recvmsg() and ancillary data
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    machines: dict[str, str] = {}

    def reply(msg: Message, signature: str, body: list[Any]) -> Message:
        return Message.new_method_return(msg, signature, body)

    def on_message(msg: Message) -> Message | bool:
        if msg.message_type is not MessageType.METHOD_CALL:
            return False
        member = msg.member
        if member == "RegisterMachine":
            name = msg.body[0]
            path = machines[name] = PREFIX + name
            bus.send(Message.new_signal(PATH, MANAGER, "MachineNew", "so", [name, path]))
            return reply(msg, "o", [path])
        if member == "UnregisterMachine":
            name = msg.body[0]
            bus.send(Message.new_signal(PATH, MANAGER, "MachineRemoved", "so", [name, machines.pop(name, PREFIX)]))
            return reply(msg, "", [])
        if member == "ListMachines":
            return reply(msg, "a(ssso)", [[[name, "container", "floor", path] for name, path in machines.items()]])
        if member == "GetMachineOSRelease":
            return reply(msg, "a{ss}", [OS_RELEASE])
        if member == "GetMachineAddresses":
            return reply(msg, "a(iay)", [ADDRESSES])
        return reply(msg, "o", [PREFIX + str(msg.body[0] if msg.body else "x")])

    bus.add_message_handler(on_message)
    await bus.request_name("org.freedesktop.machine1")
    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
