"""Hostile input on the Varlink machine socket: every method with random, boundary and wrongly typed parameters.

Each call must end in a final reply or error (oneway calls in nothing, on a connection that stays
usable); afterwards the daemon must still answer and still hold the machine it kept.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fuzzing import varlink_calls
from harness.system import System
from harness.varlink_raw import raw_call, raw_exchange

MACHINE = "/run/systemd/machine/io.systemd.Machine"
PING = {"method": "io.systemd.service.Ping", "parameters": {}}


def exchange(call: dict[str, Any]) -> str:
    """The final reply's error name (or "ok"); a oneway call must be followed by a working Ping."""
    if call.get("oneway"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(MACHINE)
            sock.sendall(json.dumps(call).encode() + b"\0" + json.dumps(PING).encode() + b"\0")
            reply = b""
            while not reply.endswith(b"\0"):
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after oneway {call}"
                reply += chunk
            assert reply == b'{"parameters":{}}\0', (call, reply)
            return "oneway"
    reply = raw_exchange(MACHINE, call, timeout=30)
    reply.close_fds()
    assert not reply.ending, (call, reply.ending)
    final = json.loads(reply.messages[-1])
    assert set(final) <= {"parameters", "error"}, final
    return str(final.get("error", "ok"))


def test_fuzz_every_varlink_method(machined: System) -> None:
    leader = machined.spawn_leader("machine-keep.scope")
    machined.register("keep", leader)
    outcomes: list[str] = []

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(varlink_calls(), min_size=10, max_size=10))
    def run(calls: list[dict[str, Any]]) -> None:
        outcomes.extend(exchange(call) for call in calls)

    run()
    assert len(outcomes) == 2000
    assert "org.varlink.service.InvalidParameter" in outcomes and "ok" in outcomes
    assert "Traceback" not in machined.log_text()
    assert raw_call(MACHINE, PING) == '{"parameters":{}}'
    kept = raw_call(MACHINE, {"method": "io.systemd.Machine.List", "parameters": {"name": "keep"}})
    assert f'"pid":{leader.pid},' in kept
    assert leader.process is not None and leader.process.poll() is None
