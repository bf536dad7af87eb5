"""Start-up and shutdown: wires the registry, state files and the bus together."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dbus_fast import BusType, Message, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.constants import NameFlag

from .actions import Authorize, Services
from .bus.dispatch import Dispatcher, Fallback, Node
from .bus.image import IMAGE_INTERFACE, ImageObjects
from .bus.image import PREFIX as IMAGE_PREFIX
from .bus.logcontrol import LOG_CONTROL_INTERFACE
from .bus.logcontrol import PATH as LOG_CONTROL_PATH
from .bus.machine import MACHINE_INTERFACE, PREFIX, MachineObjects
from .bus.manager import MANAGER_INTERFACE, PATH, machine_signal
from .bus.polkit import process_authorizer
from .images.paths import configure as configure_image_paths
from .leader import LeaderWatch
from .lifecycle import Lifecycle
from .logs import LogSettings
from .machine import Machine
from .notify import notify, watchdog_interval
from .operations import Operations
from .ops.addresses import AddressReader
from .ops.os_release_cache import OsReleaseCache
from .ops.usermap import IdMapIndex
from .registry import Registry
from .scope import SYSTEM_SCOPE, RuntimeScope
from .state import StateDirectory
from .units import UnitBackend, UnitEvents
from .units.cgroupfs import CgroupfsBackend
from .units.systemd1 import Systemd1Backend, systemd_on_bus
from .varlink.image import ImageApi
from .varlink.machine import MachineApi
from .varlink.server import Compat, VarlinkCall, VarlinkServer
from .varlink.service import service_interface
from .varlink.userdb import userdb_interface

log = logging.getLogger(__name__)

BUS_NAME: Final = "org.freedesktop.machine1"
STATE_DIR: Final = SYSTEM_SCOPE.state_dir


class StartupError(Exception):
    """The daemon cannot serve (bus unreachable, name taken)."""


@dataclass(slots=True)
class Config:
    scope: RuntimeScope = SYSTEM_SCOPE
    state_dir: Path | None = None  # default: the scope's
    bus_address: str | None = None  # default: the system bus, or the session bus of --user
    unit_backend: str = "auto"  # auto, systemd, cgroupfs
    stop_timeout: float = 90.0  # cgroupfs: SIGTERM, then SIGKILL after this many seconds


class Daemon:
    """One pymachined instance on one bus."""

    def __init__(self, config: Config, log_settings: LogSettings | None = None) -> None:
        self.config = config
        self.log_settings = log_settings or LogSettings.from_environment()
        self.state = StateDirectory(config.state_dir or config.scope.state_dir)
        self.registry = Registry(self.state)
        self.bus: MessageBus | None = None
        self.lifecycle: Lifecycle | None = None
        self.userdb: VarlinkServer | None = None
        self.varlink: VarlinkServer | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self.state.ensure()
        try:
            if self.config.bus_address:
                bus = MessageBus(bus_address=self.config.bus_address, negotiate_unix_fd=True)
            else:
                bus_type = BusType.SESSION if self.config.scope.user else BusType.SYSTEM
                bus = MessageBus(bus_type=bus_type, negotiate_unix_fd=True)
            self.bus = await bus.connect()
        except (OSError, ValueError) as exc:
            which = "user" if self.config.scope.user else "system"
            raise StartupError(f"Failed to connect to the {which} bus: {exc}") from exc
        configure_image_paths(self.config.scope.images)
        events = UnitEvents()
        backend = await self._backend(events)
        lifecycle = Lifecycle(self.registry, backend, LeaderWatch(asyncio.get_running_loop()))
        self.lifecycle = lifecycle
        events.unit_changed = lifecycle.unit_changed
        events.job_removed = lifecycle.job_removed
        events.reloaded = lifecycle.queue_all
        events.cgroup_empty = lifecycle.cgroup_empty

        uid_index, gid_index = IdMapIndex("uid"), IdMapIndex("gid")
        for index in (uid_index, gid_index):
            self.registry.on_new.append(index.add)
            self.registry.on_removed.append(index.remove)
        addresses = AddressReader()
        self.registry.on_removed.append(addresses.forget)
        os_release = OsReleaseCache()
        self.registry.on_removed.append(lambda machine: os_release.forget(machine.name))
        services = Services(
            self.registry,
            lifecycle,
            uid_index,
            gid_index,
            addresses,
            Operations(),
            os_release,
            self.bus,
            self.config.scope.user,
        )
        dispatcher = Dispatcher(self.bus, services)
        objects = MachineObjects(self.registry)
        dispatcher.add_node(PATH, Node([MANAGER_INTERFACE]))
        dispatcher.add_node(LOG_CONTROL_PATH, Node([LOG_CONTROL_INTERFACE], self.log_settings))
        dispatcher.add_node(PREFIX, Node([], None, enumerate_children=objects.labels))
        dispatcher.add_fallback(PREFIX, Fallback([MACHINE_INTERFACE], objects.find))
        images = ImageObjects()
        dispatcher.add_node(IMAGE_PREFIX, Node([], None, enumerate_children=images.labels))
        dispatcher.add_fallback(IMAGE_PREFIX, Fallback([IMAGE_INTERFACE], images.find))
        dispatcher.install()
        await self._add_match(
            "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
            "interface='org.freedesktop.DBus',member='NameOwnerChanged'"
        )
        self.registry.on_new.append(lambda m: self._signal("MachineNew", m))
        self.registry.on_removed.append(lambda m: self._signal("MachineRemoved", m))
        if self.config.scope.with_host:
            self.registry.add_host()
        userdb_socket = self.config.scope.userdb_socket
        if userdb_socket is not None:
            self.userdb = VarlinkServer([userdb_interface(self.registry, uid_index, gid_index)], compat=Compat.V252)
            try:
                await self.userdb.listen(userdb_socket, mode=0o666)
            except OSError as exc:
                raise StartupError(f"Failed to bind {userdb_socket}: {exc}") from exc
        await self._serve_varlink(services)
        reply = await self.bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise StartupError(f"Failed to acquire {BUS_NAME}: {reply.name}")
        started = await lifecycle.reload()
        log.info("Serving %s with %d machine(s) reloaded", BUS_NAME, len(started))
        notify("READY=1\nSTATUS=Processing requests...")

    async def _serve_varlink(self, services: Services) -> None:
        """io.systemd.Machine, io.systemd.MachineImage and io.systemd.service, on both machine sockets."""
        bus = self.bus
        assert bus is not None

        def authorizer(call: VarlinkCall, interactive: bool) -> Authorize:
            return process_authorizer(bus, call.peer.pid, call.peer.uid, interactive)

        scope = self.config.scope
        interfaces = [
            MachineApi(services, authorizer, user_scope=scope.user).interface(),
            ImageApi(services, authorizer).interface(),
            service_interface(self.log_settings),
        ]
        self.varlink = VarlinkServer(interfaces, compat=Compat.V257)
        for name in ("io.systemd.Machine", "io.systemd.MachineImage"):
            path = scope.machine_socket_dir / name
            try:
                await self.varlink.listen(path, mode=scope.socket_mode)
            except OSError as exc:
                raise StartupError(f"Failed to bind {path}: {exc}") from exc

    async def _backend(self, events: UnitEvents) -> UnitBackend:
        assert self.bus is not None
        choice = self.config.unit_backend
        if choice == "auto":
            choice = "systemd" if await systemd_on_bus(self.bus) else "cgroupfs"
        if choice == "systemd":
            systemd = Systemd1Backend(self.bus, events)
            await systemd.start()
            log.info("Unit backend: systemd1 (scopes are created by org.freedesktop.systemd1)")
            return systemd
        log.info("Unit backend: cgroupfs (scopes are created by pymachined in the cgroup2 hierarchy)")
        return CgroupfsBackend(events, stop_timeout=self.config.stop_timeout)

    async def _add_match(self, rule: str) -> None:
        assert self.bus is not None
        await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

    def _signal(self, member: str, machine: Machine) -> None:
        if self.bus is not None and self.bus.connected:
            self.bus.send(machine_signal(member, machine))

    def _start_watchdog(self) -> asyncio.Task[None] | None:
        interval = watchdog_interval()
        if interval is None:
            return None
        log.debug("Sending WATCHDOG=1 every %.1f s", interval)

        async def ping() -> None:
            while True:  # from the event loop: a stuck loop stops the pings, and systemd restarts us
                notify("WATCHDOG=1")
                await asyncio.sleep(interval)

        return asyncio.get_running_loop().create_task(ping())

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        await self.start()
        assert self.bus is not None
        # what start-up built (tables, interfaces, loaded machines) lives as long as the daemon: keep it out
        # of the collector's generations, so collections triggered by calls walk only what calls made
        gc.freeze()
        watchdog = self._start_watchdog()
        disconnected = asyncio.ensure_future(self.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        stopping = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if disconnected in done:
            stopping.cancel()
            raise StartupError("Lost the connection to the bus")
        if watchdog is not None:
            watchdog.cancel()
        notify("STOPPING=1\nSTATUS=Shutting down...")
        log.info("Shutting down; state files are kept")
        disconnected.cancel()
        if self.lifecycle is not None:
            await self.lifecycle.close()
        for server in (self.userdb, self.varlink):
            if server is not None:
                await server.close()
        self.bus.disconnect()
