"""Raw abuse of the Varlink machine socket at scale: the offending connection goes, the daemon stays.

Garbage, a message without its NUL, 17 MiB messages, thousands of idle connections (sd-varlink's
1024 per UID), a peer that never reads what it asked for.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import time
from collections.abc import Iterator

import pytest

from harness.system import System
from harness.varlink_raw import raw_call, raw_call_as

MACHINE = "/run/systemd/machine/io.systemd.Machine"
PING = {"method": "io.systemd.service.Ping", "parameters": {}}
PONG = '{"parameters":{}}'


def connect() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(MACHINE)
    return sock


def closed_by_peer(sock: socket.socket, timeout: float = 10) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def daemon_fds(s: System) -> int:
    assert s.daemon is not None
    return len(os.listdir(f"/proc/{s.daemon.pid}/fd"))


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_garbage_and_oversized_messages(machined: System) -> None:
    for data in (b"hello\0", b"\xff\xfe\0", b"[]\0", b'{"method":"x","upgrade":true}\0', b"\0"):
        with connect() as sock:
            sock.sendall(data)
            assert closed_by_peer(sock), data
    # 17 MiB without a NUL, and a 17 MiB well-formed call: both beyond the 16 MiB buffer
    with connect() as sock:
        try:
            sock.sendall(b"x" * (17 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_peer(sock)
    big = json.dumps({"method": "io.systemd.Machine.List", "parameters": {"name": "x" * (17 << 20)}}).encode()
    with connect() as sock:
        try:
            sock.sendall(big + b"\0")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_by_peer(sock)
    # just under the limit is a call like any other
    near = {"method": "io.systemd.Machine.List", "parameters": {"name": "x" * (15 << 20)}}
    assert raw_call(MACHINE, near, timeout=30) == (
        '{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"name"}}'
    )
    assert raw_call(MACHINE, PING) == PONG
    assert "Traceback" not in machined.log_text()


def test_thousands_of_idle_connections(machined: System, many_fds: None) -> None:
    baseline = daemon_fds(machined)
    idle = [connect() for _ in range(1500)]
    try:
        time.sleep(0.5)
        # 1024 per UID are kept, the rest are closed at once (sd-varlink's ACCOUNT_UID)
        poller = select.poll()
        for sock in idle:
            poller.register(sock, select.POLLIN)
        readable = {fd for fd, _ in poller.poll(500)}
        refused = [sock for sock in idle if sock.fileno() in readable and sock.recv(1) == b""]
        assert len(refused) == 1500 - 1024
        # another UID is still served, and so is root once it has room again
        assert raw_call_as(MACHINE, PING) == PONG
        for sock in idle[:10]:
            sock.close()
        time.sleep(0.3)
        assert raw_call(MACHINE, PING) == PONG
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while daemon_fds(machined) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert daemon_fds(machined) <= baseline


def test_slow_reader_does_not_stall_others(machined: System) -> None:
    for i in range(40):
        leader = machined.spawn_leader(f"machine-m{i}.scope")
        machined.register(f"m{i}", leader.pid)
    slow = connect()
    try:
        call = json.dumps({"method": "io.systemd.Machine.List", "parameters": {}, "more": True}).encode() + b"\0"
        slow.sendall(call * 500)  # asks for ~20 000 replies, reads none
        started = time.monotonic()
        for _ in range(20):
            assert raw_call(MACHINE, PING) == PONG
        assert time.monotonic() - started < 10
        assert machined.manager_call("ListMachines").returncode == 0
    finally:
        slow.close()
    assert raw_call(MACHINE, PING) == PONG
    assert "Traceback" not in machined.log_text()
