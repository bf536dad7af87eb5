"""The Varlink server core against the `varlink` PyPI client and raw sockets (a temp socket, no system state)."""

from __future__ import annotations

import array
import asyncio
import json
import os
import select
import socket
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import varlink

from pymachined.varlink.server import (
    BUFFER_MAX,
    Compat,
    Handler,
    Interface,
    Parameters,
    VarlinkCall,
    VarlinkError,
    VarlinkServer,
)

T = TypeVar("T")

TEST_IDL = """interface io.pymachined.Test

type Mode(
\tloud,
\tquiet
)

method Echo(
\ttext: string,
\tmode: ?Mode
) -> (
\ttext: string
)

# [Supports 'more' flag]
method Count(
\tn: int
) -> (
\ti: int
)

# [Requires 'more' flag]
method Watch() -> (
\ti: int
)

# [Supports 'more' flag]
method Flood(
\tn: int,
\tsize: int
) -> (
\tdata: string
)

method Slow(
\tdelay: float,
\ttag: string
) -> (
\ttag: string
)

method Remember(
\ttext: string
) -> ()

method Fail(
\tkind: string
) -> ()

method Pipe(
\ttext: string
) -> ()

method Peer() -> (
\tpid: int,
\tuid: int,
\tgid: int
)

error Failed(
\treason: string
)
"""


class Demo:
    """A tiny interface whose handlers exercise every reply shape."""

    def __init__(self) -> None:
        self.remembered: list[str] = []
        self.flooded = 0

    async def echo(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        return {"text": parameters["text"]}

    async def count(self, call: VarlinkCall, parameters: Parameters) -> AsyncIterator[Parameters]:
        for i in range(parameters["n"]):
            await asyncio.sleep(0)
            yield {"i": i}

    async def watch(self, call: VarlinkCall, parameters: Parameters) -> AsyncIterator[Parameters]:
        yield {"i": 0}

    async def flood(self, call: VarlinkCall, parameters: Parameters) -> AsyncIterator[Parameters]:
        for _ in range(parameters["n"]):
            self.flooded += 1
            yield {"data": "x" * parameters["size"]}

    async def slow(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        await asyncio.sleep(parameters["delay"])
        return {"tag": parameters["tag"]}

    async def remember(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        self.remembered.append(parameters["text"])
        return {}

    async def fail(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        if parameters["kind"] == "varlink":
            raise VarlinkError("io.pymachined.Test.Failed", {"reason": "asked to"})
        if parameters["kind"] == "errno":
            raise FileNotFoundError(2, "gone")
        raise RuntimeError("secret internal detail")

    async def pipe(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        """Replies with the read end of a pipe that holds `text`."""
        read_end, write_end = os.pipe()
        os.write(write_end, parameters["text"].encode())
        os.close(write_end)
        call.fds.append(read_end)
        return {}

    async def peer(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        return {"pid": call.peer.pid, "uid": call.peer.uid, "gid": call.peer.gid}

    def interface(self) -> Interface:
        methods: dict[str, Handler] = {
            "Echo": self.echo,
            "Count": self.count,
            "Watch": self.watch,
            "Flood": self.flood,
            "Slow": self.slow,
            "Remember": self.remember,
            "Fail": self.fail,
            "Pipe": self.pipe,
            "Peer": self.peer,
        }
        return Interface("io.pymachined.Test", TEST_IDL, methods)


class Raw:
    """A blocking raw-socket Varlink client (run it in a thread)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, *messages: dict[str, Any] | bytes) -> None:
        self.sock.sendall(b"".join(m if isinstance(m, bytes) else json.dumps(m).encode() + b"\0" for m in messages))

    def receive_bytes(self) -> bytes:
        while b"\0" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return message

    def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.receive_bytes())
        return message

    def call(self, method: str, parameters: dict[str, Any] | None = None, **flags: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"method": method}
        if parameters is not None:
            message["parameters"] = parameters
        self.send(message | flags)
        return self.receive()

    def closed(self) -> bool:
        """True once the server has closed the connection (EOF), after any pending replies."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


async def in_thread(function: Callable[[], T]) -> T:
    return await asyncio.to_thread(function)


@asynccontextmanager
async def serving(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[VarlinkServer, Path, Demo]]:
    demo = Demo()
    server = VarlinkServer([demo.interface()], **options)
    path = tmp_path / "run" / "io.pymachined.Test"
    await server.listen(path)
    try:
        yield server, path, demo
    finally:
        await server.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[VarlinkServer, Path, Demo]]:
    async with serving(tmp_path) as result:
        yield result


Served = tuple[VarlinkServer, Path, Demo]


# Socket set-up and shutdown


async def test_socket_replaces_stale_file_and_gets_mode(tmp_path: Path) -> None:
    path = tmp_path / "run" / "deep" / "io.pymachined.Test"
    path.parent.mkdir(parents=True)
    path.write_text("stale")
    server = VarlinkServer([Demo().interface()])
    await server.listen(path, mode=0o666)
    info = path.stat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
    assert await in_thread(lambda: Raw(path).call("io.pymachined.Test.Echo", {"text": "x"})) == {
        "parameters": {"text": "x"}
    }
    await server.close(remove_sockets=True)
    assert not path.exists()


async def test_close_drops_connections_and_listener(served: Served) -> None:
    server, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    assert await in_thread(lambda: raw.call("io.pymachined.Test.Echo", {"text": "a"}))
    await server.close()
    assert await in_thread(raw.closed)
    with pytest.raises(ConnectionRefusedError):
        await in_thread(lambda: Raw(path))


# org.varlink.service


async def test_get_info_with_varlink_client(served: Served) -> None:
    _, path, _ = served

    def query() -> Any:
        with varlink.Client(address=f"unix:{path}") as client:
            interfaces = client.get_interfaces()
            return interfaces, client.info

    interfaces, info = await in_thread(query)
    assert interfaces == ["io.pymachined.Test", "io.systemd", "org.varlink.service"]
    assert set(info) == {"vendor", "product", "version", "url", "interfaces"}
    assert info["vendor"] == "pymachined"


async def test_get_info_refuses_extra_parameters(served: Served) -> None:
    _, path, _ = served
    reply = await in_thread(lambda: Raw(path).call("org.varlink.service.GetInfo", {"foo": 1}))
    assert reply == {"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "foo"}}


async def test_interface_description_is_verbatim(served: Served) -> None:
    _, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    reply = await in_thread(
        lambda: raw.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.pymachined.Test"})
    )
    assert reply == {"parameters": {"description": TEST_IDL}}

    def open_with_client() -> Any:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            return connection.Echo(text="via IDL")

    assert await in_thread(open_with_client) == {"text": "via IDL"}


async def test_interface_not_found(served: Served) -> None:
    _, path, _ = served
    reply = await in_thread(
        lambda: Raw(path).call("org.varlink.service.GetInterfaceDescription", {"interface": "io.nope"})
    )
    assert reply == {"error": "org.varlink.service.InterfaceNotFound", "parameters": {"interface": "io.nope"}}
    missing = await in_thread(lambda: Raw(path).call("org.varlink.service.GetInterfaceDescription", {}))
    assert missing == {"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "interface"}}

    def open_with_client() -> None:
        with varlink.Client(address=f"unix:{path}") as client:
            client.open("io.nope")

    with pytest.raises(varlink.VarlinkError) as raised:
        await in_thread(open_with_client)
    assert raised.value.error() == "org.varlink.service.InterfaceNotFound"


# Calls and replies


async def test_echo_with_varlink_client_and_raw_bytes(served: Served) -> None:
    _, path, _ = served

    def echo() -> Any:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            return connection.Echo(text="héllo", mode="loud")

    assert await in_thread(echo) == {"text": "héllo"}
    raw = await in_thread(lambda: Raw(path))
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Echo", "parameters": {"text": "héllo"}}))
    assert await in_thread(raw.receive_bytes) == '{"parameters":{"text":"héllo"}}'.encode()


async def test_empty_reply_and_null_parameters(served: Served) -> None:
    _, path, demo = served
    raw = await in_thread(lambda: Raw(path))
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Remember", "parameters": {"text": "r"}}))
    assert await in_thread(raw.receive_bytes) == b"{}"
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Peer", "parameters": None}))
    assert (await in_thread(raw.receive))["parameters"]["pid"] == os.getpid()
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Watch", "parameters": None, "more": True}))
    assert await in_thread(raw.receive) == {"parameters": {"i": 0}}
    assert demo.remembered == ["r"]


async def test_more_streams_with_continues(served: Served) -> None:
    _, path, _ = served

    def count() -> list[Any]:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            return list(connection.Count(n=3, _more=True))

    assert await in_thread(count) == [{"i": 0}, {"i": 1}, {"i": 2}]
    raw = await in_thread(lambda: Raw(path))
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Count", "parameters": {"n": 3}, "more": True}))
    replies = [await in_thread(raw.receive_bytes) for _ in range(3)]
    assert replies == [
        b'{"parameters":{"i":0},"continues":true}',
        b'{"parameters":{"i":1},"continues":true}',
        b'{"parameters":{"i":2}}',
    ]


async def test_streaming_without_more(served: Served) -> None:
    _, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    single = await in_thread(lambda: raw.call("io.pymachined.Test.Count", {"n": 1}))
    assert single == {"parameters": {"i": 0}}
    several = await in_thread(lambda: raw.call("io.pymachined.Test.Count", {"n": 3}))
    assert several == {"error": "org.varlink.service.ExpectedMore"}
    required = await in_thread(lambda: raw.call("io.pymachined.Test.Watch"))
    assert required == {"error": "org.varlink.service.ExpectedMore"}


async def test_oneway_gets_no_reply(served: Served) -> None:
    _, path, demo = served
    raw = await in_thread(lambda: Raw(path))
    await in_thread(
        lambda: raw.send(
            {"method": "io.pymachined.Test.Remember", "parameters": {"text": "one"}, "oneway": True},
            {"method": "io.pymachined.Test.Nope", "oneway": True},
            {"method": "io.pymachined.Test.Remember", "parameters": {"text": 5}, "oneway": True},
            {"method": "io.pymachined.Test.Fail", "parameters": {"kind": "varlink"}, "oneway": True},
            {"method": "io.pymachined.Test.Echo", "parameters": {"text": "after"}},
        )
    )
    assert await in_thread(raw.receive) == {"parameters": {"text": "after"}}
    assert demo.remembered == ["one"]

    def oneway_with_client() -> Any:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            connection.Remember(text="two", _oneway=True)
            return connection.Echo(text="still here")

    assert await in_thread(oneway_with_client) == {"text": "still here"}
    assert demo.remembered == ["one", "two"]


async def test_pipelined_calls_answer_in_order(served: Served) -> None:
    _, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    await in_thread(
        lambda: raw.send(
            {"method": "io.pymachined.Test.Slow", "parameters": {"delay": 0.2, "tag": "first"}},
            {"method": "io.pymachined.Test.Echo", "parameters": {"text": "second"}},
            {"method": "io.pymachined.Test.Slow", "parameters": {"delay": 0, "tag": "third"}},
        )
    )
    replies = [await in_thread(raw.receive) for _ in range(3)]
    assert replies == [
        {"parameters": {"tag": "first"}},
        {"parameters": {"text": "second"}},
        {"parameters": {"tag": "third"}},
    ]


async def test_message_split_across_many_writes(served: Served) -> None:
    _, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    data = json.dumps({"method": "io.pymachined.Test.Echo", "parameters": {"text": "split"}}).encode() + b"\0"

    def dribble() -> None:
        for byte in data:
            raw.sock.sendall(bytes([byte]))

    await in_thread(dribble)
    assert await in_thread(raw.receive) == {"parameters": {"text": "split"}}


async def test_large_message_below_limit(served: Served) -> None:
    _, path, _ = served
    text = "y" * (4 * 1024 * 1024)
    reply = await in_thread(lambda: Raw(path).call("io.pymachined.Test.Echo", {"text": text}))
    assert reply == {"parameters": {"text": text}}


# Errors


@pytest.mark.parametrize("method", ["io.pymachined.Test.Nope", "io.nope.Thing.X", "badname", "org.varlink.service.X"])
async def test_method_not_found_names_the_full_method(served: Served, method: str) -> None:
    _, path, _ = served
    reply = await in_thread(lambda: Raw(path).call(method, {}))
    assert reply == {"error": "org.varlink.service.MethodNotFound", "parameters": {"method": method}}


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"text": 5}, "text"),
        ({}, "text"),
        ({"text": None}, "text"),
        ({"text": "x", "bogus": 1}, "bogus"),
        ({"text": "x", "mode": "whisper"}, "mode"),
        ({"text": "x", "mode": 1}, "mode"),
    ],
)
async def test_invalid_parameter(served: Served, parameters: dict[str, Any], field: str) -> None:
    _, path, _ = served
    reply = await in_thread(lambda: Raw(path).call("io.pymachined.Test.Echo", parameters))
    assert reply == {"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": field}}


async def test_handler_errors(served: Served) -> None:
    _, path, _ = served

    def fail_with_client() -> Any:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            try:
                connection.Fail(kind="varlink")
            except varlink.VarlinkError as error:
                return error.error(), error.parameters()
            return None

    assert await in_thread(fail_with_client) == ("io.pymachined.Test.Failed", {"reason": "asked to"})
    raw = await in_thread(lambda: Raw(path))
    errno_reply = await in_thread(lambda: raw.call("io.pymachined.Test.Fail", {"kind": "errno"}))
    assert errno_reply == {
        "error": "io.systemd.System",
        "parameters": {"origin": "linux", "errno": 2, "errnoName": "ENOENT"},
    }
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Fail", "parameters": {"kind": "bug"}}))
    bug_reply = await in_thread(raw.receive_bytes)
    assert json.loads(bug_reply) == {
        "error": "io.systemd.System",
        "parameters": {"origin": "linux", "errno": 5, "errnoName": "EIO"},
    }
    assert b"secret" not in bug_reply and b"Traceback" not in bug_reply
    assert await in_thread(lambda: raw.call("io.pymachined.Test.Echo", {"text": "alive"})) == {
        "parameters": {"text": "alive"}
    }


# Protocol errors close the connection


@pytest.mark.parametrize(
    "message",
    [
        b"\x00",
        b"garbage\xff\xfe{{{\x00",
        b"[1,2]\x00",
        b'"method"\x00',
        b'{"parameters":{}}\x00',
        b'{"method":5}\x00',
        b'{"method":"io.pymachined.Test.Echo","foo":1}\x00',
        b'{"method":"io.pymachined.Test.Echo","upgrade":true}\x00',
        b'{"method":"io.pymachined.Test.Echo","parameters":[]}\x00',
        b'{"method":"io.pymachined.Test.Echo","parameters":"x"}\x00',
        b'{"method":"io.pymachined.Test.Count","more":true,"oneway":true}\x00',
        b'{"method":"io.pymachined.Test.Count","more":"yes"}\x00',
        b'{"method":"io.pymachined.Test.Echo","method":"io.pymachined.Test.Echo"}\x00',
        b'{"method":"io.pymachined.Test.Slow","parameters":{"delay":NaN,"tag":"x"}}\x00',
    ],
)
async def test_protocol_error_closes_only_that_connection(served: Served, message: bytes) -> None:
    _, path, _ = served
    bystander = await in_thread(lambda: Raw(path))
    offender = await in_thread(lambda: Raw(path))
    await in_thread(lambda: offender.send(message))
    assert await in_thread(offender.closed)
    assert offender.buffer == b""
    reply = await in_thread(lambda: bystander.call("io.pymachined.Test.Echo", {"text": "fine"}))
    assert reply == {"parameters": {"text": "fine"}}


async def test_replies_before_a_protocol_error_are_sent(served: Served) -> None:
    _, path, _ = served
    raw = await in_thread(lambda: Raw(path))
    await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Echo", "parameters": {"text": "a"}}, b"junk\x00"))
    assert await in_thread(raw.receive) == {"parameters": {"text": "a"}}
    assert await in_thread(raw.closed)


async def test_calls_queued_behind_a_vanished_peer_are_dropped(served: Served) -> None:
    _, path, demo = served
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))  # the listener's backlog takes it; nothing is served before we wait
    sock.sendall(
        b'{"method":"io.pymachined.Test.Echo","parameters":{"text":"a"}}\0'
        b'{"method":"io.pymachined.Test.Remember","parameters":{"text":"after"}}\0'
    )
    sock.close()
    await asyncio.sleep(0.3)
    # the reply to Echo cannot be written, and that ends the connection, as in sd-varlink
    assert demo.remembered == []


async def test_oversized_message_without_nul_closes(served: Served) -> None:
    server, path, _ = served
    raw = await in_thread(lambda: Raw(path))

    def flood() -> None:
        try:
            raw.sock.sendall(b" " * (BUFFER_MAX + 256 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass

    await in_thread(flood)
    assert await in_thread(raw.closed)
    assert await in_thread(lambda: Raw(path).call("io.pymachined.Test.Echo", {"text": "ok"})) == {
        "parameters": {"text": "ok"}
    }


# Resources


async def test_slow_reader_does_not_grow_buffers(served: Served) -> None:
    _, path, demo = served
    raw = await in_thread(lambda: Raw(path))
    count, size = 400, 64 * 1024
    await in_thread(
        lambda: raw.send({"method": "io.pymachined.Test.Flood", "parameters": {"n": count, "size": size}, "more": True})
    )
    await asyncio.sleep(0.5)
    assert 0 < demo.flooded < 60  # socket buffers plus the transport's high-water mark, not 25 MiB
    replies = [await in_thread(raw.receive) for _ in range(count)]
    assert len(replies[-1]["parameters"]["data"]) == size and "continues" not in replies[-1]
    assert demo.flooded == count


async def test_fds_wait_for_queued_replies_and_arrive_with_their_own(served: Served) -> None:
    _, path, demo = served
    raw = await in_thread(lambda: Raw(path))
    count, size = 40, 64 * 1024
    await in_thread(
        lambda: raw.send(
            {"method": "io.pymachined.Test.Flood", "parameters": {"n": count, "size": size}, "more": True},
            {"method": "io.pymachined.Test.Pipe", "parameters": {"text": "through the pipe"}},
        )
    )
    await asyncio.sleep(0.3)  # the flood is stuck in socket buffers and the server's queue
    assert demo.flooded < count

    def read_all() -> tuple[bytes, list[int], range]:
        """Read the flood and the reply after it; note which bytes came with the fds."""
        data, fds, carried = b"", [], range(0)
        while data.count(b"\0") < count + 1:
            chunk, ancillary, _, _ = raw.sock.recvmsg(65536, socket.CMSG_SPACE(16))
            assert chunk
            for level, kind, payload in ancillary:
                assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
                fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
                carried = range(len(data), len(data) + len(chunk))
            data += chunk
        return data, fds, carried

    data, fds, carried = await in_thread(read_all)
    *flood, last, rest = data.split(b"\0")
    assert len(flood) == count and rest == b""
    assert json.loads(last) == {}  # empty parameters are left out (Compat.NEW)
    # The kernel hands fds out with the read that reaches the bytes they were sent with (a read may
    # begin earlier): the bytes read with them include the first byte of their own reply.
    assert len(fds) == 1 and len(data) - len(last) - 1 in carried
    try:
        assert os.read(fds[0], 100) == b"through the pipe"
    finally:
        os.close(fds[0])


def open_connections(path: Path, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        sockets.append(sock)
    return sockets


def split_closed(sockets: list[socket.socket], expect_closed: int, timeout: float = 20) -> list[socket.socket]:
    """Wait until expect_closed of the sockets have seen EOF; return the ones still open."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed: set[int] = set()
    loop_deadline = timeout * 1000
    while len(closed) < expect_closed and loop_deadline > 0:
        for fd, _ in poller.poll(100):
            assert by_fd[fd].recv(1) == b""
            poller.unregister(fd)
            closed.add(fd)
        loop_deadline -= 100
    return [sock for fd, sock in by_fd.items() if fd not in closed]


@pytest.mark.parametrize(("total", "per_uid", "kept"), [(4096, 20, 20), (30, 1024, 30)])
async def test_connection_limits(tmp_path: Path, total: int, per_uid: int, kept: int) -> None:
    attempts = 2000
    async with serving(tmp_path, connections_max=total, connections_per_uid_max=per_uid) as (server, path, _):
        sockets = await in_thread(lambda: open_connections(path, attempts))
        try:
            survivors = await in_thread(lambda: split_closed(sockets, attempts - kept))
            assert len(survivors) == kept and server.connections == kept

            def echo_all() -> list[bytes]:
                for sock in survivors:
                    sock.sendall(b'{"method":"io.pymachined.Test.Echo","parameters":{"text":"k"}}\0')
                return [sock.recv(100) for sock in survivors]

            assert set(await in_thread(echo_all)) == {b'{"parameters":{"text":"k"}}\0'}
        finally:
            for sock in sockets:
                sock.close()
        for _ in range(200):
            if server.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert server.connections == 0 and server.connections_by_uid == {}
        assert await in_thread(lambda: Raw(path).call("io.pymachined.Test.Echo", {"text": "again"}))


async def test_peer_credentials(served: Served) -> None:
    _, path, _ = served

    def peer_with_client() -> Any:
        with varlink.Client(address=f"unix:{path}") as client, client.open("io.pymachined.Test") as connection:
            return connection.Peer()

    expected = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}
    assert await in_thread(peer_with_client) == expected
    assert await in_thread(lambda: Raw(path).call("io.pymachined.Test.Peer")) == {"parameters": expected}


# systemd 252's flavour (the userdb socket)


async def test_v252_service_interface_and_reply_shapes(tmp_path: Path) -> None:
    async with serving(tmp_path, compat=Compat.V252) as (_, path, _):
        raw = await in_thread(lambda: Raw(path))
        await in_thread(
            lambda: raw.send(
                {"method": "org.varlink.service.GetInfo"},
                {"method": "org.varlink.service.GetInterface"},
                {"method": "org.varlink.service.GetInterfaceDescription", "parameters": {"interface": "x"}},
            )
        )
        assert [await in_thread(raw.receive) for _ in range(3)] == [
            {
                "error": "org.varlink.service.MethodNotImplemented",
                "parameters": {"method": "org.varlink.service.GetInfo"},
            },
            {
                "error": "org.varlink.service.MethodNotImplemented",
                "parameters": {"method": "org.varlink.service.GetInterface"},
            },
            {
                "error": "org.varlink.service.MethodNotFound",
                "parameters": {"method": "org.varlink.service.GetInterfaceDescription"},
            },
        ]
        await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Remember", "parameters": {"text": "r"}}))
        assert await in_thread(raw.receive_bytes) == b'{"parameters":{}}'
        await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Watch"}))
        assert await in_thread(raw.receive_bytes) == b'{"parameters":{"i":0}}'  # no IDL checks in 252
        await in_thread(lambda: raw.send({"method": "io.pymachined.Test.Count", "parameters": {"n": 2}}))
        assert await in_thread(raw.receive_bytes) == b'{"error":"org.varlink.service.ExpectedMore","parameters":{}}'
        errno_reply = await in_thread(lambda: raw.call("io.pymachined.Test.Fail", {"kind": "errno"}))
        assert errno_reply == {"error": "io.systemd.System", "parameters": {"errno": 2}}


async def test_v252_oneway_and_null_parameters(tmp_path: Path) -> None:
    async with serving(tmp_path, compat=Compat.V252) as (_, path, demo):
        raw = await in_thread(lambda: Raw(path))
        await in_thread(lambda: raw.send({"method": "io.pymachined.Nope", "oneway": True}))
        assert await in_thread(lambda: raw.call("io.pymachined.Test.Echo", {"text": "a"})) == {
            "parameters": {"text": "a"}
        }
        await in_thread(
            lambda: raw.send({"method": "io.pymachined.Test.Remember", "parameters": {"text": "x"}, "oneway": True})
        )
        assert await in_thread(raw.closed)
        assert demo.remembered == ["x"]
        nulled = await in_thread(lambda: Raw(path))
        await in_thread(lambda: nulled.send({"method": "io.pymachined.Test.Remember", "parameters": None}))
        assert await in_thread(nulled.closed)
