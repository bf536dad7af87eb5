"""The systemd1 backend: machine scopes are systemd units, asked for over the bus as 252 asks."""

from __future__ import annotations

import logging
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..errors import MachineError, errno_from_bus_error, forwarded, from_errno
from ..machine import Machine, MachineClass
from ..names import bus_label_escape, bus_label_unescape
from . import ScopeProperty, UnitEvents

log = logging.getLogger(__name__)

SYSTEMD: Final = "org.freedesktop.systemd1"
SYSTEMD_PATH: Final = "/org/freedesktop/systemd1"
MANAGER: Final = "org.freedesktop.systemd1.Manager"
UNIT_PREFIX: Final = "/org/freedesktop/systemd1/unit/"
TASKS_MAX: Final = 16384
MATCHES: Final = (
    f"type='signal',sender='{SYSTEMD}',path='{SYSTEMD_PATH}',interface='{MANAGER}',member='JobRemoved'",
    f"type='signal',sender='{SYSTEMD}',path='{SYSTEMD_PATH}',interface='{MANAGER}',member='UnitRemoved'",
    f"type='signal',sender='{SYSTEMD}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
    f"type='signal',sender='{SYSTEMD}',path='{SYSTEMD_PATH}',interface='{MANAGER}',member='Reloading'",
)


def unit_path(unit: str) -> str:
    return UNIT_PREFIX + bus_label_escape(unit)


class RemoteError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(text)
        self.name = name
        self.text = text


class Systemd1Backend:
    """Asks org.freedesktop.systemd1 for scopes, stops and kills; follows its signals."""

    name = "systemd1"

    def __init__(self, bus: MessageBus, events: UnitEvents) -> None:
        self.bus = bus
        self.events = events

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_signal)
        for rule in MATCHES:
            await self._call(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s", [rule]
            )
        try:
            await self._manager("Subscribe")
        except RemoteError as exc:
            log.warning("Failed to subscribe to systemd: %s", exc.text)

    async def close(self) -> None:
        self.bus.remove_message_handler(self._on_signal)

    # calls

    async def _call(
        self, dest: str, path: str, iface: str, member: str, sig: str = "", body: list[Any] | None = None
    ) -> list[Any]:
        reply = await self.bus.call(
            Message(destination=dest, path=path, interface=iface, member=member, signature=sig, body=body or [])
        )
        if reply is None:
            raise RemoteError("org.freedesktop.DBus.Error.Disconnected", "Connection terminated")
        if reply.message_type is MessageType.ERROR:
            raise RemoteError(
                reply.error_name or "org.freedesktop.DBus.Error.Failed", reply.body[0] if reply.body else ""
            )
        return list(reply.body)

    async def _manager(self, member: str, sig: str = "", body: list[Any] | None = None) -> list[Any]:
        return await self._call(SYSTEMD, SYSTEMD_PATH, MANAGER, member, sig, body)

    async def create_scope(self, machine: Machine, properties: list[ScopeProperty]) -> str:
        description = ("Virtual Machine " if machine.machine_class is MachineClass.VM else "Container ") + machine.name
        props: list[list[Any]] = [
            ["Slice", Variant("s", "machine.slice")],
            ["Description", Variant("s", description)],
            ["PIDs", Variant("au", [machine.leader])],
            ["Delegate", Variant("b", True)],
            ["CollectMode", Variant("s", "inactive-or-failed")],
            ["AddRef", Variant("b", True)],
            ["TasksMax", Variant("t", TASKS_MAX)],
        ]
        props.extend([name, Variant(sig, value)] for name, sig, value in properties)
        try:
            (job,) = await self._manager("StartTransientUnit", "ssa(sv)a(sa(sv))", [machine.unit, "fail", props, []])
        except RemoteError as exc:
            raise forwarded(exc.name, exc.text) from None
        return str(job)

    async def stop(self, machine: Machine) -> str:
        try:
            (job,) = await self._manager("StopUnit", "ss", [machine.unit, "fail"])
        except RemoteError as exc:
            if exc.name in ("org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.LoadFailed"):
                return ""
            raise from_errno(errno_from_bus_error(exc.name)) from None
        return str(job)

    async def kill(self, machine: Machine, signum: int) -> None:
        try:
            await self._manager("KillUnit", "ssi", [machine.unit, "all", signum])
        except RemoteError as exc:
            raise from_errno(errno_from_bus_error(exc.name)) from None

    async def unit_active(self, machine: Machine) -> bool:
        try:
            (state,) = await self._call(
                SYSTEMD,
                unit_path(machine.unit),
                "org.freedesktop.DBus.Properties",
                "Get",
                "ss",
                ["org.freedesktop.systemd1.Unit", "ActiveState"],
            )
        except RemoteError as exc:
            return exc.name not in ("org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.LoadFailed")
        return state.value not in ("inactive", "failed")

    async def job_pending(self, job: str) -> bool:
        try:
            await self._call(
                SYSTEMD, job, "org.freedesktop.DBus.Properties", "Get", "ss", ["org.freedesktop.systemd1.Job", "State"]
            )
        except RemoteError as exc:
            return exc.name != "org.freedesktop.DBus.Error.UnknownObject"
        return True

    def track(self, machine: Machine) -> None:
        """systemd's signals cover every unit: nothing to set up per machine."""

    async def release(self, machine: Machine) -> None:
        if machine.referenced and machine.unit:
            try:
                await self._manager("UnrefUnit", "s", [machine.unit])
            except (RemoteError, MachineError) as exc:
                log.debug("UnrefUnit(%s) failed: %s", machine.unit, exc)

    # signals

    def _on_signal(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL:
            return False
        try:
            if msg.interface == MANAGER and msg.path == SYSTEMD_PATH:
                if msg.member == "JobRemoved" and msg.signature == "uoss":
                    _id, job, unit, result = msg.body
                    self.events.job_removed(unit, job, result)
                elif msg.member == "UnitRemoved" and msg.signature == "so":
                    self.events.unit_changed(msg.body[0])
                elif msg.member == "Reloading" and msg.signature == "b" and not msg.body[0]:
                    self.events.reloaded()
            elif msg.interface == "org.freedesktop.DBus.Properties" and msg.member == "PropertiesChanged":
                path = msg.path or ""
                if path.startswith(UNIT_PREFIX):
                    self.events.unit_changed(bus_label_unescape(path[len(UNIT_PREFIX) :]))
        except Exception:
            log.exception("Failed to handle a signal from systemd")
        return False


async def systemd_on_bus(bus: MessageBus) -> bool:
    """Is org.freedesktop.systemd1 on this bus now?"""
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameHasOwner",
            signature="s",
            body=[SYSTEMD],
        )
    )
    return reply is not None and reply.message_type is MessageType.METHOD_RETURN and bool(reply.body[0])
