"""An asyncio Varlink server that behaves on the wire like systemd's sd-varlink (252 or newer)."""

from __future__ import annotations

import asyncio
import enum
import errno
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard, cast

from .. import __version__
from ..errors import ErrorKind, MachineError, errno_from_bus_error, varlink_error
from .connection import HIGH_WATER, ClientGone, Connection, Listener, Peer, close_fds, peer_credentials
from .idl import Idl, IdlMethod, bad_field, parse_idl

log = logging.getLogger(__name__)

BUFFER_MAX: Final = 16 * 1024 * 1024
CONNECTIONS_MAX: Final = 4096
CONNECTIONS_PER_UID_MAX: Final = 1024

SERVICE_INTERFACE: Final = "org.varlink.service"
SYSTEMD_INTERFACE: Final = "io.systemd"
INTERFACE_NOT_FOUND: Final = "org.varlink.service.InterfaceNotFound"
METHOD_NOT_FOUND: Final = "org.varlink.service.MethodNotFound"
METHOD_NOT_IMPLEMENTED: Final = "org.varlink.service.MethodNotImplemented"
INVALID_PARAMETER: Final = "org.varlink.service.InvalidParameter"
PERMISSION_DENIED: Final = "org.varlink.service.PermissionDenied"
EXPECTED_MORE: Final = "org.varlink.service.ExpectedMore"
SYSTEM_ERROR: Final = "io.systemd.System"

INVALID_UIDS: Final = frozenset({0xFFFF, 0xFFFFFFFF})

Parameters = dict[str, Any]
Handler = Callable[["VarlinkCall", Parameters], Awaitable[Parameters] | AsyncIterator[Parameters]]


class Compat(enum.Enum):
    """Which sd-varlink generation the server imitates.

    252: no IDL, no org.varlink.service, empty parameters always written, System {"errno": N}.
    257: IDL validation and introspection, empty parameters still written, System {"errno": N}.
    NEW: IDL validation and introspection, empty parameters left out, System with origin and errnoName.
    """

    V252 = "252"
    V257 = "257"
    NEW = "new"

    @property
    def has_idl(self) -> bool:
        return self is not Compat.V252

    @property
    def writes_empty_parameters(self) -> bool:
        return self is not Compat.NEW


class VarlinkError(Exception):
    """An error reply: raised by a handler, sent as {"error": name, "parameters": ...}."""

    def __init__(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(name)
        self.name = name
        self.parameters: Parameters = dict(parameters or {})


@dataclass(frozen=True, slots=True)
class VarlinkCall:
    """One method call as a handler sees it; fds a handler appends go with its next reply (SCM_RIGHTS)."""

    method: str
    more: bool
    oneway: bool
    peer: Peer
    fds: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Interface:
    """A served interface: its name, its IDL text (returned verbatim) and its method handlers."""

    name: str
    description: str
    methods: Mapping[str, Handler]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What org.varlink.service.GetInfo reports (systemd: vendor, "product (program)", version, url)."""

    vendor: str = "pymachined"
    product: str = "pymachined (systemd-machined)"
    version: str = f"{__version__} ({__version__})"
    url: str = "https://systemd.io/"


SERVICE_IDL: Final = """interface org.varlink.service

method GetInfo() -> (
\tvendor: string,
\tproduct: string,
\tversion: string,
\turl: string,
\tinterfaces: []string
)

method GetInterfaceDescription(
\tinterface: string
) -> (
\tdescription: string
)

error InterfaceNotFound(
\tinterface: string
)

error MethodNotFound(
\tmethod: string
)

error MethodNotImplemented(
\tmethod: string
)

error InvalidParameter(
\tparameter: string
)

error PermissionDenied()

error ExpectedMore()
"""

SYSTEMD_IDL_257: Final = """interface io.systemd

error Disconnected()

error TimedOut()

error Protocol()

error System(
\terrno: int
)
"""

SYSTEMD_IDL: Final = """interface io.systemd

error Disconnected()

error TimedOut()

error Protocol()

error System(
\torigin: ?string,
\terrnoName: ?string,
\terrno: ?string
)
"""


# The server.


class ProtocolViolation(Exception):
    """A message sd-varlink would answer by closing the connection."""


@dataclass(slots=True)
class Request:
    """A method call that passed the protocol checks."""

    method: str
    parameters: Parameters
    more: bool
    oneway: bool


class _MessageDecoder(json.JSONDecoder):
    """json.loads() for Varlink messages, built once (json.loads() with options builds a decoder per
    call): NaN and Infinity are refused, and whether the last object decoded had unique keys is kept.
    The hook runs innermost first, so after a message that is an object, that is the top-level one."""

    def __init__(self) -> None:
        self.last_object_unique = True
        super().__init__(object_pairs_hook=self._unique_keys, parse_constant=self._no_constants)

    def decode_message(self, data: bytes) -> Any:
        self.last_object_unique = True
        return self.decode(data.decode())

    def _unique_keys(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        self.last_object_unique = len(result) == len(pairs)
        return result

    @staticmethod
    def _no_constants(name: str) -> Any:
        raise ValueError(name)


_DECODER: Final = _MessageDecoder()
# compact UTF-8, as sd-varlink writes
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class VarlinkServer:
    """Serves a set of interfaces on one or more Unix sockets, one call at a time per connection."""

    def __init__(
        self,
        interfaces: Iterable[Interface],
        *,
        compat: Compat = Compat.NEW,
        info: ServiceInfo | None = None,
        connections_max: int = CONNECTIONS_MAX,
        connections_per_uid_max: int = CONNECTIONS_PER_UID_MAX,
        account_uid: bool = True,
    ) -> None:
        self.compat = compat
        self.info = info or ServiceInfo()
        self.connections_max = connections_max
        self.connections_per_uid_max = connections_per_uid_max
        self.account_uid = account_uid
        self.interfaces: dict[str, Interface] = {}
        self.handlers: dict[str, Handler] = {}
        self.idl_methods: dict[str, tuple[IdlMethod, Idl]] = {}
        if compat.has_idl:
            # Every newer sd-varlink server carries these two implicitly.
            builtin = {"GetInfo": self.get_info, "GetInterfaceDescription": self.get_interface_description}
            self.add_interface(Interface(SERVICE_INTERFACE, SERVICE_IDL, builtin))
            systemd_idl = SYSTEMD_IDL_257 if compat is Compat.V257 else SYSTEMD_IDL
            self.add_interface(Interface(SYSTEMD_INTERFACE, systemd_idl, {}))
        for interface in interfaces:
            self.add_interface(interface)
        self.listeners: list[tuple[Listener, Path]] = []
        self.connections_open: set[Connection] = set()
        self.connections = 0
        self.connections_by_uid: dict[int, int] = {}

    def add_interface(self, interface: Interface) -> None:
        """Register an interface; in NEW mode its IDL is parsed to validate calls."""
        if interface.name in self.interfaces:
            raise ValueError(f"interface {interface.name} registered twice")
        idl = parse_idl(interface.description) if self.compat.has_idl else None
        if idl is not None and idl.name != interface.name:
            raise ValueError(f"IDL declares {idl.name}, not {interface.name}")
        self.interfaces[interface.name] = interface
        for member, handler in interface.methods.items():
            self.handlers[f"{interface.name}.{member}"] = handler
            if idl is not None and member in idl.methods:
                self.idl_methods[f"{interface.name}.{member}"] = (idl.methods[member], idl)

    async def listen(self, path: Path | str, mode: int = 0o666) -> None:
        """Bind a socket at path (stale file removed, parent created 0755) and start accepting."""
        path = Path(path)
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            # chmod rather than umask: umask is per process and would race with other threads.
            os.chmod(path, mode)
            sock.listen(socket.SOMAXCONN)
            listener = Listener(asyncio.get_running_loop(), sock, self.accept)
        except BaseException:
            sock.close()
            raise
        self.listeners.append((listener, path))

    async def close(self, *, remove_sockets: bool = False) -> None:
        """Stop listening, drop every connection, and optionally remove the socket files."""
        for listener, _ in self.listeners:
            listener.close()
        tasks = [conn.task for conn in self.connections_open if conn.task is not None]
        for conn in list(self.connections_open):
            conn.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        if remove_sockets:
            for _, path in self.listeners:
                path.unlink(missing_ok=True)
        self.listeners.clear()

    def admit(self, peer: Peer) -> bool:
        """Count a new connection, or refuse it as sd-varlink does (total limit, invalid UID, per-UID limit)."""
        if self.connections >= self.connections_max:
            log.debug("Connection limit of %d reached, refusing.", self.connections_max)
            return False
        if self.account_uid:
            if peer.uid in INVALID_UIDS:
                return False
            if self.connections_by_uid.get(peer.uid, 0) >= self.connections_per_uid_max:
                log.debug("Per-UID connection limit of %d reached, refusing.", self.connections_per_uid_max)
                return False
            self.connections_by_uid[peer.uid] = self.connections_by_uid.get(peer.uid, 0) + 1
        self.connections += 1
        return True

    def release(self, peer: Peer) -> None:
        """Uncount a connection that admit() let in."""
        self.connections -= 1
        if self.account_uid:
            remaining = self.connections_by_uid[peer.uid] - 1
            if remaining:
                self.connections_by_uid[peer.uid] = remaining
            else:
                del self.connections_by_uid[peer.uid]

    def accept(self, sock: socket.socket) -> None:
        """Take a new connection, or refuse it (the peer sees it closed at once)."""
        try:
            peer = peer_credentials(sock)
        except OSError:
            sock.close()
            return
        if not self.admit(peer):
            sock.close()
            return
        conn = Connection(asyncio.get_running_loop(), sock, peer, self.handle, self.closed, BUFFER_MAX)
        self.connections_open.add(conn)

    def closed(self, conn: Connection) -> None:
        self.connections_open.discard(conn)
        self.release(conn.peer)

    async def handle(self, conn: Connection, data: bytes) -> bool:
        """Answer one message; False if the connection must be closed once the answer is out.

        sd-varlink does not read the next call before the current one is answered; the connection
        hands messages over one at a time."""
        try:
            request = self.parse(data)
            return await self.dispatch(request, conn.peer, conn)
        except ProtocolViolation as violation:
            log.debug("Protocol error from peer %d: %s, disconnecting.", conn.peer.pid, violation)
        except (ClientGone, ConnectionError):
            pass
        except Exception:
            log.exception("Varlink connection of peer %d failed", conn.peer.pid)
        return False

    def parse(self, data: bytes) -> Request:
        """Decode one message and check it the way varlink_dispatch_method() does."""
        try:
            message = _DECODER.decode_message(data)
        except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ProtocolViolation(f"invalid JSON: {error}") from None
        if not isinstance(message, dict) or not _DECODER.last_object_unique:
            raise ProtocolViolation("not a JSON object with unique keys")
        method: str | None = None
        parameters: Parameters = {}
        more = oneway = False
        for key, value in message.items():
            if key == "method":
                if not isinstance(value, str):
                    raise ProtocolViolation("method is not a string")
                method = value
            elif key == "parameters":
                if value is None and self.compat.has_idl:
                    continue
                if not isinstance(value, dict):
                    raise ProtocolViolation("parameters is not an object")
                parameters = value
            elif key in ("oneway", "more"):
                # As sd-varlink: a second flag is refused only if an earlier one was set.
                if more or oneway or not isinstance(value, bool):
                    raise ProtocolViolation(f"bad {key}")
                more = value if key == "more" else more
                oneway = value if key == "oneway" else oneway
            else:
                raise ProtocolViolation(f"unknown key {key!r}")  # 'upgrade' included
        if method is None:
            raise ProtocolViolation("no method")
        return Request(method, parameters, more, oneway)

    async def dispatch(self, request: Request, peer: Peer, conn: Connection) -> bool:
        """Answer one call; False if the connection must be closed afterwards."""
        method = request.method
        call = VarlinkCall(method, request.more, request.oneway, peer)
        handler = self.handlers.get(method)
        if self.compat is Compat.V252 and method.startswith(SERVICE_INTERFACE + "."):
            # 252 implements none of org.varlink.service; note it spells the second method "GetInterface".
            handler = None
            if method in ("org.varlink.service.GetInfo", "org.varlink.service.GetInterface"):
                if not request.oneway:
                    await self.send(conn, self.error(METHOD_NOT_IMPLEMENTED, {"method": method}))
                return True
        if handler is None:
            if not request.oneway:
                await self.send(conn, self.error(METHOD_NOT_FOUND, {"method": method}))
            return True
        if method in self.idl_methods:
            idl_method, idl = self.idl_methods[method]
            if idl_method.requires_more and not request.more:
                if not request.oneway:
                    await self.send(conn, self.error(EXPECTED_MORE))
                return True
            invalid = bad_field(request.parameters, idl_method.inputs, idl_method.names, idl.types)
            if invalid is not None:
                if not request.oneway:
                    await self.send(conn, self.error(INVALID_PARAMETER, {"parameter": invalid}))
                return True
        if request.oneway:
            await self.run_oneway(call, handler, request.parameters)
            # 252 fails the handler's reply on a oneway call, and that failure tears the link down.
            return self.compat is not Compat.V252
        await self.answer(call, handler, request.parameters, conn)
        return True

    async def answer(self, call: VarlinkCall, handler: Handler, parameters: Parameters, conn: Connection) -> None:
        """Run a handler and send its replies, or the error it raised."""
        try:
            result = handler(call, parameters)
            if is_stream(result):
                await self.stream(call, result, conn)
            else:
                parameters = await cast(Awaitable[Parameters], result)
                await self.send(conn, self.reply(parameters), call.fds)
        except ClientGone:
            raise
        except VarlinkError as error:
            await self.send(conn, self.error(error.name, error.parameters))
        except MachineError as error:
            await self.send(conn, self.machine_error(error))
        except Exception as error:
            await self.send(conn, self.system_error(self.errno_of(call, error)))
        finally:
            close_fds(call.fds)

    async def stream(self, call: VarlinkCall, replies: AsyncIterator[Parameters], conn: Connection) -> None:
        """Send every reply but the last with continues; ExpectedMore if a second reply comes without `more`."""
        try:
            pending = await next_reply(replies)
            if pending is None:
                raise RuntimeError(f"handler of {call.method} produced no reply")
            while True:
                try:
                    following = await next_reply(replies)
                except (VarlinkError, MachineError, OSError):
                    # as sd-varlink: what was ready goes out before the error that ends the stream
                    if call.more:
                        await self.send(conn, self.reply(pending, continues=True), call.fds)
                    raise
                if following is None:
                    break
                if not call.more:
                    raise VarlinkError(EXPECTED_MORE)
                await self.send(conn, self.reply(pending, continues=True), call.fds)
                pending = following
            await self.send(conn, self.reply(pending), call.fds)
        finally:
            aclose = getattr(replies, "aclose", None)
            if aclose is not None:
                await aclose()

    async def run_oneway(self, call: VarlinkCall, handler: Handler, parameters: Parameters) -> None:
        """Run a handler for a oneway call; whatever it replies is dropped."""
        try:
            result = handler(call, parameters)
            if is_stream(result):
                async for _ in result:
                    pass
            else:
                await cast(Awaitable[Parameters], result)
        except (VarlinkError, MachineError) as error:
            log.debug("Oneway call %s failed: %s", call.method, error)
        except Exception as error:
            self.errno_of(call, error)
        finally:
            close_fds(call.fds)

    @staticmethod
    def errno_of(call: VarlinkCall, error: Exception) -> int:
        """The errno a failed handler stands for (EIO for bugs, which are logged with their traceback)."""
        if isinstance(error, OSError) and error.errno:
            log.debug("Handler of %s failed: %s", call.method, error)
            return error.errno
        log.error("Handler of %s failed", call.method, exc_info=error)
        return errno.EIO

    def reply(self, parameters: Parameters, *, continues: bool = False) -> Parameters:
        """A reply message; NEW omits empty parameters, 252 always writes them."""
        if not isinstance(parameters, dict):
            raise TypeError(f"a reply must be a dict, not {type(parameters).__name__}")
        message: Parameters = {}
        if parameters or self.compat.writes_empty_parameters:
            message["parameters"] = parameters
        if continues:
            message["continues"] = True
        return message

    def error(self, name: str, parameters: Parameters | None = None) -> Parameters:
        """An error message."""
        message: Parameters = {"error": name}
        if parameters or self.compat.writes_empty_parameters:
            message["parameters"] = parameters or {}
        return message

    def system_error(self, number: int) -> Parameters:
        """io.systemd.System in the shape of the imitated generation."""
        if self.compat is not Compat.NEW:
            return self.error(SYSTEM_ERROR, {"errno": number})
        parameters: Parameters = {"origin": "linux", "errno": number}
        if number in errno.errorcode:
            parameters["errnoName"] = errno.errorcode[number]
        return self.error(SYSTEM_ERROR, parameters)

    def machine_error(self, error: MachineError) -> Parameters:
        """A core error as Varlink names it (errno failures as io.systemd.System)."""
        if error.kind is ErrorKind.ERRNO:
            return self.system_error(error.errno)
        if error.kind is ErrorKind.FORWARDED:
            return self.system_error(errno_from_bus_error(error.name))
        name = varlink_error(error)
        if name == SYSTEM_ERROR:
            return self.system_error(error.errno or errno.EIO)
        return self.error(name)

    async def send(self, conn: Connection, message: Parameters, fds: list[int] | None = None) -> None:
        """Write one message (compact UTF-8 JSON and a NUL) and wait while the peer is slow to read.

        File descriptors go with the message's first byte; they are closed once sent.
        """
        data = _ENCODER.encode(message).encode() + b"\0"
        if fds:
            await conn.drain(0)
            conn.write(data, fds)
            close_fds(fds)
        else:
            conn.write(data)
        if conn.queued > HIGH_WATER:
            await conn.drain()

    async def get_info(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        """org.varlink.service.GetInfo: sorted interface names, extra input refused."""
        if parameters:
            raise VarlinkError(INVALID_PARAMETER, {"parameter": next(iter(parameters))})
        return {
            "vendor": self.info.vendor,
            "product": self.info.product,
            "version": self.info.version,
            "url": self.info.url,
            "interfaces": sorted(self.interfaces),
        }

    async def get_interface_description(self, call: VarlinkCall, parameters: Parameters) -> Parameters:
        """org.varlink.service.GetInterfaceDescription: the IDL text as registered."""
        name = parameters["interface"]
        if name not in self.interfaces:
            raise VarlinkError(INTERFACE_NOT_FOUND, {"interface": name})
        return {"description": self.interfaces[name].description}


def is_stream(result: Awaitable[Parameters] | AsyncIterator[Parameters]) -> TypeGuard[AsyncIterator[Parameters]]:
    """Whether a handler returned a stream of replies (cheaper than an isinstance() check against the ABC)."""
    return hasattr(type(result), "__anext__")


async def next_reply(replies: AsyncIterator[Parameters]) -> Parameters | None:
    """The next reply of a stream, None at its end."""
    try:
        return await replies.__anext__()
    except StopAsyncIteration:
        return None
