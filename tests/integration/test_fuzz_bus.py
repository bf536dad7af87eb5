"""Hostile input on the bus: every Manager and Machine method with random and boundary arguments.

Each call must get a reply or an error (never silence, never a crash), and afterwards the daemon must
still answer and still hold the machine it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from dbus_fast import Message, MessageType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.client import call_each
from harness.fuzzing import draw_bus_call
from harness.system import System


def healthy(s: System) -> list[str]:
    result = s.manager_call("ListMachines", options=["--json=short"])
    assert result.returncode == 0, result.output
    assert s.daemon is not None and s.daemon.poll() is None
    return sorted(result.stdout.split('"')[1::2])


def test_fuzz_every_method(machined: System) -> None:
    leader = machined.spawn_leader("machine-keep.scope")
    machined.register("keep", leader)
    before = healthy(machined)
    received: list[Message | None] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        received.extend(asyncio.run(call_each([draw_bus_call(data) for _ in range(10)])))

    run()
    assert len(received) == 2000
    assert all(r is not None and r.message_type in (MessageType.METHOD_RETURN, MessageType.ERROR) for r in received)
    for reply in received:
        assert reply is not None
        for fd in reply.unix_fds:  # PTY masters and root directories passed to us
            with contextlib.suppress(OSError):
                os.close(fd)
    # no internal error leaked, and the daemon is intact
    assert not [
        r
        for r in received
        if r is not None and r.error_name == "org.freedesktop.DBus.Error.Failed" and r.body == ["Input/output error"]
    ]
    assert "Traceback" not in machined.log_text()
    after = healthy(machined)
    assert "keep" in after and set(before) <= set(after)
