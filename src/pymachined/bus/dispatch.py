"""Method-call dispatch on the bus, with sd-bus's generic replies.

dbus-fast's ServiceInterface cannot serve fallback object paths (machines and
images are looked up per call, `…/machine/self` by the caller's PID), nor give
sd-bus's error texts and introspection format; so calls are routed here, from
one low-level message handler, to the vtables of bus/vtable.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from .. import eager
from ..errors import MachineError, dbus_error
from .introspect import node_xml
from .premarshalled import Marshalled, PremarshalledReply
from .vtable import Body, Interface, Method, Property, WithFds

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is Python ≥ 3.13

log = logging.getLogger(__name__)

DBUS_ERROR: Final = "org.freedesktop.DBus.Error"
PEER: Final = "org.freedesktop.DBus.Peer"
INTROSPECTABLE: Final = "org.freedesktop.DBus.Introspectable"
PROPERTIES: Final = "org.freedesktop.DBus.Properties"
NO_REPLY_EXPECTED: Final = MessageFlag.NO_REPLY_EXPECTED.value
ALLOW_INTERACTIVE_AUTHORIZATION: Final = 0x4
CREDENTIALS_CACHE_MAX: Final = 4096


class BusReplyError(Exception):
    """A D-Bus error reply with an explicit name and text."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text)
        self.name = name
        self.text = text


@dataclass(frozen=True, slots=True)
class Credentials:
    uid: int
    pid: int


Finder = Callable[["Call", str], Any]  # → object, None, or an awaitable of either
Enumerator = Callable[[], Iterable[str]]


@dataclass(slots=True)
class Node:
    """A static object path with its interfaces and the object handlers act on."""

    interfaces: list[Interface]
    obj: Any = None
    enumerate_children: Enumerator | None = None


@dataclass(slots=True)
class Fallback:
    """Objects below a prefix resolved per call (machine/<label>, image/<label>)."""

    interfaces: list[Interface]
    find: Finder


@dataclass(slots=True)
class Call:
    """One incoming method call and what a handler may ask about it."""

    message: Message
    dispatcher: Dispatcher
    _credentials: Credentials | None = field(default=None)

    @property
    def sender(self) -> str:
        return self.message.sender or ""

    @property
    def allows_interactive_authorization(self) -> bool:
        return bool(self.message.flags.value & ALLOW_INTERACTIVE_AUTHORIZATION)

    async def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = await self.dispatcher.credentials(self.sender)
        return self._credentials


class Dispatcher:
    """Routes method calls to vtables and sends the replies."""

    def __init__(self, bus: MessageBus, context: Any = None) -> None:
        self.bus = bus
        self.context = context  # what handlers reach through call.dispatcher.context
        self.nodes: dict[str, Node] = {}
        self.fallbacks: dict[str, Fallback] = {}
        self.machine_id = ""
        self._credentials: dict[str, Credentials] = {}
        self.peer_listeners: list[Callable[[str], None]] = []  # told when a unique name leaves the bus
        self._tasks: set[asyncio.Task[None]] = set()
        self.memo: dict[str, tuple[object, Marshalled]] = {}  # reply bodies kept while their version holds
        try:
            with open("/etc/machine-id") as f:
                self.machine_id = f.read().strip()
        except OSError:
            pass

    # registration

    def add_node(self, path: str, node: Node) -> None:
        self.nodes[path] = node

    def add_fallback(self, prefix: str, fallback: Fallback) -> None:
        self.fallbacks[prefix] = fallback

    def install(self) -> None:
        self.bus.add_message_handler(self._on_message)

    # credentials of peers, cached per unique name until it leaves the bus

    async def credentials(self, sender: str) -> Credentials:
        cached = self._credentials.get(sender)
        if cached is not None:
            return cached
        reply = await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="GetConnectionCredentials",
                signature="s",
                body=[sender],
            )
        )
        if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
            name = reply.error_name if reply is not None and reply.error_name else f"{DBUS_ERROR}.Failed"
            text = reply.body[0] if reply is not None and reply.body else "Failed to query credentials"
            raise BusReplyError(name, text)
        values = reply.body[0]
        creds = Credentials(uid=int(values["UnixUserID"].value), pid=int(values["ProcessID"].value))
        if len(self._credentials) >= CREDENTIALS_CACHE_MAX:
            self._credentials.clear()
        self._credentials[sender] = creds
        return creds

    def forget_peer(self, name: str) -> None:
        self._credentials.pop(name, None)
        for listener in self.peer_listeners:
            listener(name)

    # message handling

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.METHOD_CALL:
            if (
                msg.message_type is MessageType.SIGNAL
                and msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"
                and msg.body
                and not msg.body[2]
            ):
                self.forget_peer(msg.body[0])
            return False
        try:
            result = self._dispatch(msg)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            self._reply_exception(msg, exc)
            return True
        if _pending(result):
            if type(result) is CoroutineType:
                # run it now, as far as it goes without waiting: most handlers finish here and reply
                # without a task and another turn of the event loop
                try:
                    started = eager.start(result)
                except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - never into dbus-fast's reader
                    self._reply_exception(msg, exc)
                    return True
                if isinstance(started, eager.Done):
                    if started.value is not None:
                        self._send(msg, started.value)
                    return True
                result = started
            task = asyncio.ensure_future(self._finish(msg, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif result is not None:
            self._send(msg, result)
        return True

    async def _finish(self, msg: Message, pending: Awaitable[Message | None]) -> None:
        try:
            reply = await pending
        except Exception as exc:  # noqa: BLE001
            self._reply_exception(msg, exc)
            return
        if reply is not None:
            self._send(msg, reply)

    def _send(self, msg: Message, reply: Message) -> None:
        if msg.flags.value & NO_REPLY_EXPECTED:
            _close_all(reply.unix_fds)
            return
        sent = self.bus.send(reply)
        if reply.unix_fds:
            fds = list(reply.unix_fds)
            sent.add_done_callback(lambda _f: _close_all(fds))

    def _reply_exception(self, msg: Message, exc: BaseException) -> None:
        if isinstance(exc, MachineError):
            name, text = dbus_error(exc)
        elif isinstance(exc, BusReplyError):
            name, text = exc.name, exc.text
        else:
            log.exception("Failed to process %s.%s on %s", msg.interface, msg.member, msg.path)
            name, text = f"{DBUS_ERROR}.Failed", "Input/output error"
        self._send(msg, Message.new_error(msg, name, text))

    def _dispatch(self, msg: Message) -> Message | Awaitable[Message | None] | None:
        if msg.interface == PEER:
            return self._peer(msg)
        path = msg.path or "/"
        node = self.nodes.get(path)
        if node is not None:
            return self._on_object(msg, path, node.interfaces, node.obj)
        for prefix, fallback in self.fallbacks.items():
            if path.startswith(prefix + "/"):
                label = path[len(prefix) + 1 :]
                call = Call(msg, self)
                found = fallback.find(call, label)
                if _pending(found):
                    return self._after_find(msg, call, path, fallback.interfaces, found)
                if found is None:
                    raise unknown_object(path)
                return self._on_object(msg, path, fallback.interfaces, found, call)
        if self._children(path):
            return self._on_object(msg, path, [], None)
        raise unknown_object(path)

    async def _after_find(
        self, msg: Message, call: Call, path: str, interfaces: list[Interface], found: Awaitable[Any]
    ) -> Message | None:
        obj = await found
        if obj is None:
            raise unknown_object(path)
        result = self._on_object(msg, path, interfaces, obj, call)
        if _pending(result):
            return await result
        return result

    def _peer(self, msg: Message) -> Message:
        if msg.member == "Ping" and msg.signature == "":
            return Message.new_method_return(msg)
        if msg.member == "GetMachineId" and msg.signature == "":
            return Message.new_method_return(msg, "s", [self.machine_id])
        raise unknown_method(msg.member or "", PEER)

    def _children(self, path: str) -> list[str]:
        """Child node names of `path`: static sub-paths, then enumerated fallback objects."""
        prefix = path.rstrip("/") + "/"
        names: list[str] = []
        for other in sorted([*self.nodes, *self.fallbacks]):
            if other.startswith(prefix):
                child = other[len(prefix) :].split("/", 1)[0]
                if child and child not in names:
                    names.append(child)
        node = self.nodes.get(path)
        if node is not None and node.enumerate_children is not None:
            names.extend(node.enumerate_children())
        return names

    def _on_object(
        self,
        msg: Message,
        path: str,
        interfaces: list[Interface],
        obj: Any,
        call: Call | None = None,
    ) -> Message | Awaitable[Message | None] | None:
        member = msg.member or ""
        iface_name = msg.interface
        if iface_name == INTROSPECTABLE and member == "Introspect":
            check_signature(msg, INTROSPECTABLE, "")
            xml = node_xml(interfaces, self._children(path))
            return Message.new_method_return(msg, "s", [xml])
        if iface_name == PROPERTIES:
            return self._properties(msg, interfaces, obj, call or Call(msg, self))
        method: Method | None = None
        interface: Interface | None = None
        for candidate in interfaces:
            if iface_name is None or candidate.name == iface_name:
                method = candidate.methods.get(member)
                if method is not None:
                    interface = candidate
                    break
        if method is None or interface is None:
            raise unknown_method(member, iface_name or "")
        check_signature(msg, interface.name, method.in_signature)
        call = call or Call(msg, self)
        if method.privileged:
            return self._privileged(call, interface, method, obj)
        return self._invoke(call, method, obj)

    def _invoke(self, call: Call, method: Method, obj: Any) -> Message | Awaitable[Message | None]:
        result = method.handler(call, obj, *call.message.body)
        if _pending(result):
            return self._await_reply(call, method, result)
        return self._method_return(call.message, method, result)

    async def _await_reply(
        self, call: Call, method: Method, pending: Awaitable[Body | WithFds | Marshalled]
    ) -> Message:
        return self._method_return(call.message, method, await pending)

    async def _privileged(self, call: Call, interface: Interface, method: Method, obj: Any) -> Message | None:
        creds = await call.credentials()
        if creds.uid not in (0, os.getuid()):  # sd-bus: privileged, or the bus owner's own user
            raise BusReplyError(
                f"{DBUS_ERROR}.AccessDenied",
                f"Access to {interface.name}.{method.name}() not permitted.",
            )
        result = self._invoke(call, method, obj)
        if _pending(result):
            return await result
        return result

    @staticmethod
    def _method_return(msg: Message, method: Method, body: Body | WithFds | Marshalled) -> Message:
        if isinstance(body, Marshalled):
            return PremarshalledReply(msg, method.out_signature, body)
        if isinstance(body, WithFds):
            return Message(
                message_type=MessageType.METHOD_RETURN,
                reply_serial=msg.serial,
                destination=msg.sender,
                signature=method.out_signature,
                body=body.body,
                unix_fds=body.fds,
            )
        return Message.new_method_return(msg, method.out_signature, body)

    # org.freedesktop.DBus.Properties

    def _properties(
        self, msg: Message, interfaces: list[Interface], obj: Any, call: Call
    ) -> Message | Awaitable[Message | None]:
        member = msg.member
        if member == "Get":
            check_signature(msg, PROPERTIES, "ss")
            iface_name, prop_name = msg.body
            prop = _find_property(interfaces, iface_name, prop_name)
            return Message.new_method_return(msg, "v", [Variant(prop.type, prop.getter(obj))])
        if member == "GetAll":
            check_signature(msg, PROPERTIES, "s")
            (iface_name,) = msg.body
            selected = interfaces if iface_name == "" else [_find_interface(interfaces, iface_name)]
            values = {
                p.name: Variant(p.type, p.getter(obj))
                for interface in selected
                for p in interface.properties.values()
                if not p.hidden
            }
            return Message.new_method_return(msg, "a{sv}", [values])
        if member == "Set":
            check_signature(msg, PROPERTIES, "ssv")
            iface_name, prop_name, value = msg.body
            prop = _find_property(interfaces, iface_name, prop_name)
            interface = _find_interface(interfaces, iface_name)
            if prop.setter is None:
                raise BusReplyError(f"{DBUS_ERROR}.PropertyReadOnly", f"Property '{prop_name}' is not writable.")
            return self._set_property(call, interface, prop, obj, value)
        raise unknown_method(member or "", PROPERTIES)

    async def _set_property(
        self, call: Call, interface: Interface, prop: Property, obj: Any, value: Variant
    ) -> Message:
        if value.signature != prop.type:
            raise BusReplyError(
                f"{DBUS_ERROR}.InvalidArgs",
                f"Incorrect parameters for property '{prop.name}', expected '{prop.type}', got '{value.signature}'.",
            )
        if prop.privileged:
            creds = await call.credentials()
            if creds.uid not in (0, os.getuid()):
                raise BusReplyError(
                    f"{DBUS_ERROR}.AccessDenied",
                    f"Access to {interface.name}.{prop.name}() not permitted.",
                )
        assert prop.setter is not None
        prop.setter(call, obj, value.value)
        return Message.new_method_return(call.message)


def _pending(value: object) -> TypeIs[Awaitable[Any]]:
    """inspect.isawaitable() with the common answers first (it costs an ABC check per call otherwise)."""
    kind = type(value)
    if kind is CoroutineType:
        return True
    if value is None or kind is list or kind is Message or kind is WithFds or kind is Marshalled:
        return False
    return inspect.isawaitable(value)


def _close_all(fds: list[int] | None) -> None:
    for fd in fds or ():
        try:
            os.close(fd)
        except OSError:
            pass


def _find_interface(interfaces: list[Interface], name: str) -> Interface:
    for interface in interfaces:
        if interface.name == name:
            return interface
    raise BusReplyError(f"{DBUS_ERROR}.UnknownInterface", f"Unknown interface '{name}'.")


def _find_property(interfaces: list[Interface], iface_name: str, prop_name: str) -> Property:
    for interface in interfaces:
        if interface.name == iface_name and (prop := interface.properties.get(prop_name)) is not None:
            return prop
    raise BusReplyError(f"{DBUS_ERROR}.UnknownProperty", f"Unknown interface {iface_name} or property {prop_name}.")


def check_signature(msg: Message, interface: str, expected: str) -> None:
    if msg.signature != expected:
        raise BusReplyError(
            f"{DBUS_ERROR}.InvalidArgs",
            f"Invalid arguments '{msg.signature}' to call {interface}.{msg.member}(), expecting '{expected}'.",
        )


def unknown_object(path: str) -> BusReplyError:
    return BusReplyError(f"{DBUS_ERROR}.UnknownObject", f"Unknown object '{path}'.")


def unknown_method(member: str, interface: str) -> BusReplyError:
    return BusReplyError(f"{DBUS_ERROR}.UnknownMethod", f"Unknown method {member} or interface {interface}.")
