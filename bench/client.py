"""Clients the benchmark drives both daemons with: dbus-fast for D-Bus, a raw NUL-framed Varlink socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from harness.system import BUS_ADDRESS, BUS_NAME

MANAGER_PATH = "/org/freedesktop/machine1"
MANAGER_IFACE = "org.freedesktop.machine1.Manager"
USERDB_SOCKET = Path("/run/systemd/userdb/io.systemd.Machine")


class BenchError(RuntimeError):
    pass


async def connect() -> MessageBus:
    return await MessageBus(bus_address=BUS_ADDRESS, bus_type=BusType.SYSTEM).connect()


def manager(member: str, signature: str = "", body: list[object] | None = None) -> Message:
    return Message(
        destination=BUS_NAME,
        path=MANAGER_PATH,
        interface=MANAGER_IFACE,
        member=member,
        signature=signature,
        body=body or [],
    )


def register(name: str, pid: int) -> Message:
    return manager("RegisterMachine", "sayssus", [name, b"", "", "container", pid, ""])


def unregister(name: str) -> Message:
    return manager("UnregisterMachine", "s", [name])


def dbus_call(member: str, signature: str = "", body: list[object] | None = None) -> Message:
    return Message(
        destination="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member=member,
        signature=signature,
        body=body or [],
    )


def checked(msg: Message, reply: Message | None) -> Message:
    if reply is None:
        raise BenchError(f"{msg.member}: no reply")
    if reply.message_type is MessageType.ERROR:
        raise BenchError(f"{msg.member}{msg.body}: {reply.error_name} {reply.body}")
    return reply


async def call(bus: MessageBus, msg: Message) -> Message:
    return checked(msg, await bus.call(msg))


async def timed_calls(bus: MessageBus, make: Callable[[int], Message], n: int, warmup: int = 20) -> list[float]:
    """n calls, each awaited before the next (after `warmup` unmeasured ones); the latency of each in seconds."""
    for i in range(warmup):
        checked(make(i), await bus.call(make(i)))
    samples: list[float] = []
    clock = time.perf_counter
    for i in range(n):
        msg = make(i)
        t0 = clock()
        reply = await bus.call(msg)
        samples.append(clock() - t0)
        checked(msg, reply)
    return samples


class Varlink:
    """A raw Varlink connection: one JSON object per call, NUL-terminated, replies read to the NUL."""

    def __init__(self, path: Path = USERDB_SOCKET) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buffer = b""

    def call(self, method: str, parameters: dict[str, object]) -> dict[str, object]:
        self.sock.sendall(json.dumps({"method": method, "parameters": parameters}).encode() + b"\0")
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("varlink: connection closed")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(b"\0")
        reply: dict[str, object] = json.loads(frame)
        return reply

    def close(self) -> None:
        self.sock.close()
