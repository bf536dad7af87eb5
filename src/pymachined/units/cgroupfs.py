"""The cgroupfs backend: machine scopes made and watched in the cgroup2 hierarchy, no systemd."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from pathlib import Path
from typing import Final

from asyncinotify import Inotify, Mask, Watch

from .. import cgroup
from ..errors import forwarded, from_errno
from ..machine import Machine
from ..names import unit_name_is_valid, unit_type
from . import ScopeProperty, UnitEvents

log = logging.getLogger(__name__)

UNIT_EXISTS: Final = "org.freedesktop.systemd1.UnitExists"
PROPERTY_READ_ONLY: Final = "org.freedesktop.DBus.Error.PropertyReadOnly"
INVALID_ARGS: Final = "org.freedesktop.DBus.Error.InvalidArgs"
UINT64_MAX: Final = 2**64 - 1

# properties whose meaning is the scope's bookkeeping in systemd, satisfied by construction here
_ACCEPTED: Final = {"Delegate": "b", "CollectMode": "s", "AddRef": "b", "Description": "s"}
# systemd scope properties a plain cgroup2 tree cannot enforce: accepted, and said so in the log
_NOT_ENFORCED: Final = {
    "Controller": "s",
    "DevicePolicy": "s",
    "DeviceAllow": "a(ss)",
    "KillMode": "s",
    "KillSignal": "i",
    "SendSIGKILL": "b",
    "SendSIGHUP": "b",
    "TimeoutStopUSec": "t",
    "CPUAccounting": "b",
    "MemoryAccounting": "b",
    "TasksAccounting": "b",
    "IOAccounting": "b",
    "BlockIOAccounting": "b",
    "CPUQuotaPerSecUSec": "t",
    "RequiresMountsFor": "as",
    "Wants": "as",
    "After": "as",
    "Before": "as",
    "BindsTo": "as",
}
# resource limits: property → (controller, file, signature)
_LIMITS: Final = {
    "TasksMax": ("pids", "pids.max", "t"),
    "MemoryMax": ("memory", "memory.max", "t"),
    "MemoryHigh": ("memory", "memory.high", "t"),
    "MemoryLow": ("memory", "memory.low", "t"),
    "CPUWeight": ("cpu", "cpu.weight", "t"),
    "IOWeight": ("io", "io.weight", "t"),
}


class CgroupfsBackend:
    """Scopes are cgroups below machine.slice; empty cgroups are noticed through inotify."""

    name = "cgroupfs"

    def __init__(self, events: UnitEvents, stop_timeout: float = 90.0) -> None:
        self.events = events
        self.stop_timeout = stop_timeout
        self._inotify: Inotify | None = None
        self._watches: dict[str, Watch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kill_timers: dict[str, asyncio.TimerHandle] = {}

    # scope creation

    async def create_scope(self, machine: Machine, properties: list[ScopeProperty]) -> str:
        settings = _parse_properties(machine, properties)
        path = cgroup.slice_path(settings.slice).rstrip("/") + "/" + machine.unit
        if cgroup.exists(path) and cgroup.is_populated(path):
            raise forwarded(UNIT_EXISTS, f"Unit {machine.unit} was already loaded or has a fragment file.")
        try:
            cgroup.create(path)
            cgroup.mark_owned(path, machine.unit)
            for name, (controller, filename, value) in settings.limits.items():
                _apply_limit(path, name, controller, filename, value)
            for pid in settings.pids:
                cgroup.attach(path, pid)
        except OSError as exc:
            cgroup.remove(path)
            raise from_errno(exc.errno or errno.EIO, f"Failed to create scope {machine.unit}: %m") from None
        machine.cgroup = path
        machine.owns_cgroup = True
        log.info("Created %s in %s (%s)", machine.unit, cgroup.cgroup_dir(path), settings.description)
        return ""

    # stopping and signals

    async def stop(self, machine: Machine) -> str:
        path = self._path(machine)
        cgroup.signal_all(path, signal.SIGTERM)
        cgroup.signal_all(path, signal.SIGCONT)
        loop = asyncio.get_running_loop()
        if path not in self._kill_timers:
            self._kill_timers[path] = loop.call_later(self.stop_timeout, self._kill_now, path)
        return ""

    def _kill_now(self, path: str) -> None:
        self._kill_timers.pop(path, None)
        if cgroup.is_populated(path):
            log.info("Stopping %s timed out, killing what is left", path)
            cgroup.kill_all(path)

    async def kill(self, machine: Machine, signum: int) -> None:
        cgroup.signal_all(self._path(machine), signum)

    def _path(self, machine: Machine) -> str:
        if not machine.cgroup:
            raise from_errno(errno.ESRCH)
        return machine.cgroup

    # state

    async def unit_active(self, machine: Machine) -> bool:
        if not machine.cgroup:
            return True  # nothing to look at: the leader decides
        return cgroup.is_populated(machine.cgroup)

    async def job_pending(self, job: str) -> bool:
        return False

    def track(self, machine: Machine) -> None:
        if not machine.cgroup or machine.cgroup in self._watches:
            return
        events_file = cgroup.events_file(machine.cgroup)
        try:
            inotify = self._ensure_inotify()
            self._watches[machine.cgroup] = inotify.add_watch(events_file, Mask.MODIFY)
        except OSError as exc:
            log.warning("Cannot watch %s: %s", events_file, exc)
            return
        if not cgroup.is_populated(machine.cgroup):  # emptied before the watch was in place
            self.events.cgroup_empty(machine.cgroup)

    async def release(self, machine: Machine) -> None:
        path = machine.cgroup
        if not path:
            return
        watch = self._watches.pop(path, None)
        if watch is not None and self._inotify is not None:
            try:
                self._inotify.rm_watch(watch)
            except (OSError, ValueError):
                pass
        timer = self._kill_timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        if machine.owns_cgroup:
            if cgroup.is_populated(path):
                cgroup.kill_all(path)
                for _ in range(100):
                    if not cgroup.is_populated(path):
                        break
                    await asyncio.sleep(0.01)
            cgroup.remove(path)

    async def close(self) -> None:
        for timer in self._kill_timers.values():
            timer.cancel()
        if self._inotify is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None

    # inotify on cgroup.events

    def _ensure_inotify(self) -> Inotify:
        if self._inotify is None:
            # read from a reader callback with sync_get(): asyncinotify's async iteration would add and
            # remove the reader, and wake a task, for every event
            self._inotify = Inotify(sync_timeout=0)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._inotify.fd, self._read_events)
        return self._inotify

    def _read_events(self) -> None:
        assert self._inotify is not None
        while (event := self._inotify.sync_get()) is not None:
            if event.mask & Mask.IGNORED or event.path is None:
                continue
            path = _cgroup_of(Path(event.path))
            if path is not None and not cgroup.is_populated(path):
                self.events.cgroup_empty(path)


def _cgroup_of(events_file: Path) -> str | None:
    try:
        return "/" + str(events_file.parent.relative_to(cgroup.unified_mount())).lstrip(".")
    except ValueError:
        return None


class _Settings:
    def __init__(self) -> None:
        self.slice = "machine.slice"
        self.description = ""
        self.pids: list[int] = []
        self.limits: dict[str, tuple[str, str, int]] = {}


def _parse_properties(machine: Machine, properties: list[ScopeProperty]) -> _Settings:
    """Read the scope properties as systemd would: later ones win; unknown ones are refused."""
    settings = _Settings()
    log.debug("Scope %s properties: %s", machine.unit, ", ".join(f"{n}={v!r}" for n, _s, v in properties))
    for name, signature, value in properties:
        if name == "Slice":
            _expect(name, signature, "s")
            if not (unit_name_is_valid(value) and unit_type(value) == "slice"):
                raise forwarded(INVALID_ARGS, f"Invalid slice name {value}")
            settings.slice = value
        elif name == "PIDs":
            _expect(name, signature, "au")
            settings.pids = [int(p) for p in value]
        elif name in _ACCEPTED:
            _expect(name, signature, _ACCEPTED[name])
            if name == "Description":
                settings.description = value
        elif name in _NOT_ENFORCED:
            _expect(name, signature, _NOT_ENFORCED[name])
            log.info("Scope %s: %s is accepted but not enforced by the cgroupfs backend", machine.unit, name)
        elif name in _LIMITS:
            controller, filename, sig = _LIMITS[name]
            _expect(name, signature, sig)
            settings.limits[name] = (controller, filename, int(value))
        else:
            raise forwarded(PROPERTY_READ_ONLY, f"Cannot set property {name}, or unknown property.")
    if not settings.pids:
        settings.pids = [machine.leader]
    return settings


def _expect(name: str, signature: str, expected: str) -> None:
    if signature != expected:
        raise forwarded(INVALID_ARGS, f"Invalid type for property {name}, expected '{expected}', got '{signature}'.")


def _apply_limit(path: str, name: str, controller: str, filename: str, value: int) -> None:
    """Write a limit; where the controller is not available to cgroup2 here, say so and go on."""
    if controller not in cgroup.controllers(path):
        parent = path.rsplit("/", 1)[0] or "/"
        try:
            (cgroup.cgroup_dir(parent) / "cgroup.subtree_control").write_text(f"+{controller}\n")
        except OSError:
            pass
    if controller not in cgroup.controllers(path):
        log.warning(
            "%s=%s not applied to %s: the %s controller is not available in cgroup2 here", name, value, path, controller
        )
        return
    text = "max" if value == UINT64_MAX else str(value)
    (cgroup.cgroup_dir(path) / filename).write_text(text + "\n")
