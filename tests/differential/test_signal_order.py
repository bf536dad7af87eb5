"""MachineNew / MachineRemoved relative to the method reply, seen by a dbus-fast client."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dbus_fast import Message, MessageType

from harness.client import add_match, connect, manager_call
from harness.differential import Transcript, assert_same_as_252
from harness.system import System

MATCH = "type='signal',sender='org.freedesktop.machine1',interface='org.freedesktop.machine1.Manager'"


async def sequence_of(calls: list[Message]) -> list[str]:
    """Send each call; record signals and replies in the order they arrive."""
    bus = await connect()
    seen: list[str] = []

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member in ("MachineNew", "MachineRemoved"):
            seen.append(f"signal {msg.member} {msg.body[0]} {msg.body[1]}")

    bus.add_message_handler(on_message)
    await add_match(bus, MATCH)
    for call in calls:
        reply = await bus.call(call)
        assert reply is not None
        kind = "error " + str(reply.error_name) if reply.message_type is MessageType.ERROR else "reply"
        seen.append(f"{kind} {call.member} {reply.body}")
    await asyncio.sleep(0.2)  # a late signal would show up after the replies
    bus.disconnect()
    return seen


def test_signals_come_before_replies(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        bar = t.leader("machine-my\\x2dbar.scope")
        other = t.leader("machine-other.scope")
        calls = [
            manager_call("RegisterMachine", "sayssus", ["foo", b"", "", "container", foo.pid, ""]),
            manager_call("RegisterMachineWithNetwork", "sayssusai", ["my-bar", b"", "", "vm", bar.pid, "", [2]]),
            manager_call("RegisterMachine", "sayssus", ["foo", b"", "", "container", other.pid, ""]),
            manager_call("UnregisterMachine", "s", ["foo"]),
            manager_call("UnregisterMachine", "s", [".host"]),
            manager_call("UnregisterMachine", "s", ["my-bar"]),
        ]
        t.note("sequence", "\n".join(asyncio.run(sequence_of(calls))))

    steps = assert_same_as_252(scenario, tmp_path)
    sequence = steps[0][1].splitlines()
    assert sequence[:2] == [
        "signal MachineNew foo /org/freedesktop/machine1/machine/foo",
        "reply RegisterMachine ['/org/freedesktop/machine1/machine/foo']",
    ]


def test_restart_announces_reloaded_machines(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        s.register("foo", foo)

        async def watch_restart() -> list[str]:
            bus = await connect()
            seen: list[str] = []
            bus.add_message_handler(
                lambda m: seen.append(f"{m.member} {m.body}") if m.member in ("MachineNew", "MachineRemoved") else None
            )
            await add_match(bus, MATCH)
            await asyncio.to_thread(s.restart_daemon)
            await asyncio.sleep(0.3)
            bus.disconnect()
            return seen

        t.note("signals across a restart", "\n".join(asyncio.run(watch_restart())))

    steps = assert_same_as_252(scenario, tmp_path)
    assert steps[0][1] == "MachineNew ['foo', '/org/freedesktop/machine1/machine/foo']"
