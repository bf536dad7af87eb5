"""How machines live: register, create, terminate, kill, notice death, garbage-collect, reload.

The registry holds the tables and the state files; this module decides when machines come and
go. It talks to a unit backend (systemd1 or cgroupfs) and watches leaders by pidfd. It is the one
place both transports call for these operations.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal as signal_mod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from . import cgroup, eager
from .errors import ErrorKind, MachineError, from_errno, invalid_args, machine_exists, no_such_machine
from .leader import LeaderWatch, PidRef, is_alive
from .machine import Machine
from .names import unit_name_escape
from .registry import Registration, Registry
from .units import ScopeProperty, UnitBackend

log = logging.getLogger(__name__)

KILL_WHO: Final = ("leader", "all", "supervisor")
SIGNAL_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked: the peer's effective UID and PID."""

    uid: int
    pid: int


@dataclass(slots=True)
class Extras:
    """Registration data beyond 252's arguments (RegisterMachineEx, CreateMachineEx)."""

    leader_ref: PidRef | None = None
    vsock_cid: int = 0
    ssh_address: str = ""
    ssh_private_key_path: str = ""


def validate_kill(who: str, signum: int) -> str:
    """The kill target 252 accepts ("" means all), and a signal of 1…64."""
    target = who or "all"
    if target not in KILL_WHO:
        raise invalid_args(f"Invalid kill parameter '{who}'")
    if not 1 <= signum <= SIGNAL_MAX:
        raise invalid_args(f"Invalid signal {signum}")
    return target


def scope_unit_name(machine_name: str) -> str:
    return f"machine-{unit_name_escape(machine_name)}.scope"


class Lifecycle:
    """Starts, stops and collects machines, with one unit backend."""

    def __init__(self, registry: Registry, backend: UnitBackend, leaders: LeaderWatch) -> None:
        self.registry = registry
        self.backend = backend
        self.leaders = leaders
        self._gc_queue: dict[str, Machine] = {}
        self._gc_task: asyncio.Task[None] | None = None
        self._create_replies: dict[str, asyncio.Future[Machine]] = {}
        # units being created, and the results of their jobs if systemd's JobRemoved overtook
        # the StartTransientUnit reply on its way to us
        self._creating: set[str] = set()
        self._early_results: dict[str, str] = {}

    # registration

    def register(self, req: Registration, caller: Caller, extras: Extras | None = None) -> Machine:
        """RegisterMachine*: the unit comes from the leader's cgroup; the machine starts at once."""
        extras = extras or Extras()
        existing = self.registry.find(req.name)
        if existing is not None:
            if self._same_registration(existing, req, extras):
                return existing
            raise machine_exists(req.name)
        try:
            path = cgroup.pid_cgroup(req.leader)
            unit = cgroup.unit_from_cgroup_path(path)
        except OSError as exc:
            raise from_errno(exc.errno or errno.EIO, f"Failed to determine unit of process {req.leader} : %m") from None
        machine = self._new_machine(req, caller, extras)
        machine.unit = unit
        try:
            machine.cgroup = cgroup.unit_cgroup_path(path, unit)
        except OSError:
            machine.cgroup = ""
        self._start(machine)
        return machine

    def _same_registration(self, existing: Machine, req: Registration, extras: Extras) -> bool:
        """The same leader registering the same name again (e.g. after a restart race)."""
        if not existing.started or existing.leader != req.leader or not is_alive(req.leader):
            return False
        wanted = extras.leader_ref.fd_id if extras.leader_ref else 0
        return not (wanted and existing.leader_pidfd_id and wanted != existing.leader_pidfd_id)

    def _new_machine(self, req: Registration, caller: Caller, extras: Extras) -> Machine:
        machine = Machine(
            name=req.name,
            machine_class=req.machine_class,
            id=req.id,
            service=req.service,
            root_directory=req.root_directory,
            leader=req.leader,
            netif=req.netif,
            uid=caller.uid,
            vsock_cid=extras.vsock_cid,
            ssh_address=extras.ssh_address,
            ssh_private_key_path=extras.ssh_private_key_path,
        )
        machine.leader_ref = extras.leader_ref or _pin(req.leader)
        if caller.pid and caller.pid != req.leader:
            machine.supervisor_ref = _pin(caller.pid)
        return machine

    def _start(self, machine: Machine) -> None:
        try:
            self.registry.start(machine)
        except MachineError:
            machine.release()
            raise
        # Watching the leader and the cgroup is nothing the caller sees, so it runs once the reply is out,
        # while the caller reads it. What ends in between is seen all the same: a pidfd stays readable,
        # and track() looks at cgroup.events once its watch is in place.
        asyncio.get_running_loop().call_soon(self._watch_if_current, machine)

    def _watch_if_current(self, machine: Machine) -> None:
        if machine.started and self.registry.find(machine.name) is machine:
            self._watch(machine)

    def _watch(self, machine: Machine) -> None:
        if machine.leader_ref is not None:
            self.leaders.watch(machine.leader_ref, lambda: self._leader_exited(machine))
        self.backend.track(machine)

    # creation of a scope

    async def create(
        self, req: Registration, properties: Sequence[ScopeProperty], caller: Caller, extras: Extras | None = None
    ) -> asyncio.Future[Machine]:
        """CreateMachine*: a new scope for the leader. The future resolves when the scope runs."""
        extras = extras or Extras()
        if self.registry.find(req.name) is not None:
            raise machine_exists(req.name)
        machine = self._new_machine(req, caller, extras)
        machine.unit = scope_unit_name(req.name)
        self._creating.add(machine.unit)
        try:
            self.registry.check_startable(machine)
            job = await self.backend.create_scope(machine, list(properties))
        except BaseException:
            machine.release()
            raise
        finally:
            self._creating.discard(machine.unit)
        early = self._early_results.pop(job, None) if job else None
        machine.referenced = True
        machine.scope_job = job
        if self.registry.find(req.name) is not None:  # lost a race while systemd worked
            await self.backend.release(machine)
            machine.release()
            raise machine_exists(req.name)
        self._start(machine)
        future: asyncio.Future[Machine] = asyncio.get_running_loop().create_future()
        if not job:
            future.set_result(machine)
            return future
        self._create_replies[machine.name] = future
        if early is not None:
            self.job_removed(machine.unit, job, early)  # the job ended before its path reached us
        return future

    def job_removed(self, unit: str, job: str, result: str) -> None:
        machine = self.registry.by_unit.get(unit)
        if machine is None:
            if unit in self._creating:
                self._early_results[job] = result
            return
        if job == machine.scope_job:
            machine.scope_job = ""
            future = self._create_replies.pop(machine.name, None)
            if machine.started and future is not None and not future.done():
                if result == "done":
                    self.registry.save(machine)
                    future.set_result(machine)
                else:
                    future.set_exception(
                        MachineError(ErrorKind.JOB_FAILED, f"Start job for unit {unit} failed with '{result}'")
                    )
            self.registry.save(machine)
        self.queue_gc(machine)

    # stopping

    async def terminate(self, machine: Machine) -> None:
        if not machine.is_container_or_vm:
            raise from_errno(errno.EOPNOTSUPP)
        job = await self.backend.stop(machine)
        if job:
            machine.scope_job = job
        machine.stopping = True
        self.registry.save(machine)
        self.queue_gc(machine)

    async def kill(self, machine: Machine, who: str, signum: int) -> None:
        """Kill after validate_kill() and authorization."""
        if not machine.is_container_or_vm:
            raise from_errno(errno.EOPNOTSUPP)
        if who == "leader":
            _signal(machine.leader_ref or PidRef(machine.leader), signum)
        elif who == "supervisor":
            if machine.supervisor_ref is None:
                raise from_errno(errno.ESRCH)
            _signal(machine.supervisor_ref, signum)
        else:
            await self.backend.kill(machine, signum)

    def unregister(self, machine: Machine) -> None:
        """UnregisterMachine: forget it now; nothing is stopped. The release (watches, pidfds) runs once
        the reply is out."""
        self._forget(machine)
        asyncio.get_running_loop().call_soon(self._spawn_release, machine)

    def _spawn_release(self, machine: Machine) -> None:
        eager.spawn(self._release(machine), f"Releasing machine {machine.name}")

    # death and garbage collection

    def _leader_exited(self, machine: Machine) -> None:
        log.info("Leader %d of machine %s exited", machine.leader, machine.name)
        self.queue_gc(machine)

    def unit_changed(self, unit: str) -> None:
        machine = self.registry.by_unit.get(unit)
        if machine is not None:
            self.queue_gc(machine)

    def cgroup_empty(self, path: str) -> None:
        for machine in self.registry:
            if machine.cgroup == path:
                self.queue_gc(machine)

    def queue_all(self) -> None:
        for machine in self.registry:
            self.queue_gc(machine)

    def queue_gc(self, machine: Machine) -> None:
        if machine.is_host:
            return
        self._gc_queue[machine.name] = machine
        if self._gc_task is None or self._gc_task.done():
            self._gc_task = asyncio.get_running_loop().create_task(self._run_gc())

    async def _run_gc(self) -> None:
        while self._gc_queue:
            _name, machine = self._gc_queue.popitem()
            if self.registry.find(machine.name) is not machine:
                continue
            try:
                await self._collect(machine)
            except Exception:
                log.exception("Failed to collect machine %s", machine.name)

    async def wait_gc(self) -> None:
        while self._gc_task is not None and not self._gc_task.done():
            await self._gc_task

    async def may_gc(self, machine: Machine, drop_unstarted: bool = True) -> bool:
        if machine.is_host:
            return False
        if not machine.started:
            return drop_unstarted
        if machine.leader_ref is not None and not is_alive(machine.leader):
            return True  # beyond 252, which never notices a dead leader
        if machine.scope_job and await self.backend.job_pending(machine.scope_job):
            return False
        if machine.unit and await self.backend.unit_active(machine):
            return False
        return True

    async def _collect(self, machine: Machine) -> None:
        if not await self.may_gc(machine):
            return
        if machine.referenced and not machine.stopping:
            try:
                await self.backend.stop(machine)
            except MachineError as exc:
                log.debug("Failed to stop %s: %s", machine.unit, exc)
            machine.stopping = True
        self._forget(machine)
        await self._release(machine)

    def _forget(self, machine: Machine) -> None:
        future = self._create_replies.pop(machine.name, None)
        if future is not None and not future.done():
            future.set_exception(no_such_machine(machine.name))
        if machine.leader_ref is not None:
            self.leaders.unwatch(machine.leader_ref)
        self._gc_queue.pop(machine.name, None)
        self.registry.finalize(machine)

    async def _release(self, machine: Machine) -> None:
        try:
            await self.backend.release(machine)
        finally:
            machine.release()

    # start-up

    async def reload(self) -> list[Machine]:
        """Load the state files, drop what reality contradicts, start the rest (MachineNew each)."""
        for name in self.registry.state.remove_stale_temporaries():
            log.info("Removed %s, a state file a previous instance did not finish writing", name)
        loaded = self.registry.load_state()
        started: list[Machine] = []
        for machine in loaded:
            reason = self._stale(machine)
            if reason:
                log.info("Dropping machine %s from the state directory: %s", machine.name, reason)
                self.registry.finalize(machine)
                continue
            machine.leader_ref = _pin(machine.leader)
            if machine.unit:
                try:
                    path = cgroup.pid_cgroup(machine.leader)
                    machine.cgroup = cgroup.unit_cgroup_path(path, machine.unit)
                    machine.owns_cgroup = cgroup.owned_by_us(machine.cgroup, machine.unit)
                except OSError:
                    machine.cgroup = ""
            try:
                self._start(machine)
            except MachineError as exc:
                log.warning("Failed to start machine %s, dropping it: %s", machine.name, exc)
                self.registry.finalize(machine)
                continue
            started.append(machine)
        for machine in started:
            self.queue_gc(machine)
        return started

    @staticmethod
    def _stale(machine: Machine) -> str:
        """Why a reloaded machine no longer matches reality ("" if it does)."""
        if not machine.leader:
            return ""
        if not is_alive(machine.leader):
            return f"leader {machine.leader} is gone"
        if machine.unit:
            try:
                unit = cgroup.pid_unit(machine.leader)
            except OSError:
                return f"leader {machine.leader} is in no unit"
            if unit != machine.unit:
                return f"PID {machine.leader} now belongs to {unit}, not {machine.unit}"
        return ""

    async def close(self) -> None:
        for future in self._create_replies.values():
            if not future.done():
                future.cancel()
        if self._gc_task is not None:
            self._gc_task.cancel()
        await self.backend.close()


def _pin(pid: int) -> PidRef | None:
    try:
        return PidRef.pin(pid)
    except OSError:
        return None


def _signal(ref: PidRef, signum: int) -> None:
    try:
        ref.send_signal(signum)
    except ProcessLookupError:
        raise from_errno(errno.ESRCH) from None
    except OSError as exc:
        raise from_errno(exc.errno or errno.EIO) from None


SIGRTMIN_PLUS_4: Final = signal_mod.SIGRTMIN + 4
