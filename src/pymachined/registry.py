"""The machine table: lookup by name, unit and leader; registration, start, removal, reload."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import cgroup
from .clock import Clock, boot_timestamp, system_now
from .errors import (
    from_errno,
    invalid_args,
    no_machine_for_pid,
    no_such_machine,
)
from .machine import Machine, MachineClass
from .names import HOST_MACHINE, machine_name_is_valid
from .state import StateDirectory

log = logging.getLogger(__name__)

MachineListener = Callable[[Machine], None]


@dataclass(slots=True)
class Registration:
    """Arguments of RegisterMachine*/CreateMachine*, validated."""

    name: str
    id: bytes
    service: str
    machine_class: MachineClass
    leader: int
    root_directory: str
    netif: list[int]


def validate_registration(
    name: str,
    machine_id: bytes,
    service: str,
    class_name: str,
    leader: int,
    root_directory: str,
    netif: Sequence[int] = (),
) -> Registration:
    """Check arguments in 252's order; raise the first failure."""
    if not machine_name_is_valid(name):
        raise invalid_args("Invalid machine name")
    if len(machine_id) not in (0, 16):
        raise invalid_args("Invalid machine ID parameter")
    for ifindex in netif:
        if ifindex <= 0:
            raise invalid_args(f"Invalid network interface index {ifindex}")
    machine_class = MachineClass.from_string(class_name)
    if machine_class is None:
        raise invalid_args("Invalid machine class parameter")
    if leader == 1:
        raise invalid_args("Invalid leader PID")
    if root_directory and not root_directory.startswith("/"):
        raise invalid_args("Root directory must be empty or an absolute path")
    return Registration(
        name=name,
        id=b"" if machine_id == bytes(16) else bytes(machine_id),
        service=service,
        machine_class=machine_class,
        leader=leader,
        root_directory=root_directory,
        netif=list(netif),
    )


def read_machine_id(path: Path = Path("/etc/machine-id")) -> bytes:
    try:
        text = path.read_text().strip()
        raw = bytes.fromhex(text)
    except (OSError, ValueError):
        return b""
    return raw if len(raw) == 16 else b""


def host_machine() -> Machine:
    """The `.host` machine: the host itself, always present."""
    return Machine(
        name=HOST_MACHINE,
        machine_class=MachineClass.HOST,
        id=read_machine_id(),
        leader=1,
        unit="-.slice",
        root_directory="/",
        timestamp=boot_timestamp(),
        started=True,
    )


class Registry:
    """All known machines, and the tables that find them."""

    def __init__(self, state: StateDirectory, clock: Clock = system_now) -> None:
        self.state = state
        self.clock = clock
        self.by_name: dict[str, Machine] = {}
        self.by_unit: dict[str, Machine] = {}
        self.by_leader: dict[int, Machine] = {}
        self.on_new: list[MachineListener] = []
        self.on_removed: list[MachineListener] = []
        self.generation = 0  # bumped whenever by_name changes: what listings may be cached by

    # lookup

    def find(self, name: str) -> Machine | None:
        return self.by_name.get(name)

    def get(self, name: str) -> Machine:
        machine = self.by_name.get(name)
        if machine is None:
            raise no_such_machine(name)
        return machine

    def find_by_pid(self, pid: int) -> Machine | None:
        """The machine whose leader is `pid`, else the one whose unit holds `pid`."""
        machine = self.by_leader.get(pid)
        if machine is not None:
            return machine
        try:
            unit = cgroup.pid_unit(pid)
        except OSError:
            return None
        return self.by_unit.get(unit)

    def get_by_pid(self, pid: int) -> Machine:
        if pid <= 0 or pid >= 2**31:
            raise from_errno(errno.EINVAL)
        machine = self.find_by_pid(pid)
        if machine is None:
            raise no_machine_for_pid(pid)
        return machine

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    # lifecycle

    def add_host(self) -> Machine:
        host = host_machine()
        self.by_name[host.name] = host
        self.generation += 1
        return host

    def check_startable(self, machine: Machine) -> None:
        """252's machine_start checks: a container or VM, with a leader no other machine has."""
        if not machine.is_container_or_vm:
            raise from_errno(errno.EOPNOTSUPP)
        if machine.leader in self.by_leader and self.by_leader[machine.leader] is not machine:
            raise from_errno(errno.EEXIST)

    def start(self, machine: Machine) -> None:
        """Enter the tables, stamp, persist and announce a machine (machine_start)."""
        if machine.started:
            return
        self.check_startable(machine)
        self.by_name[machine.name] = machine
        self.generation += 1
        self.by_leader[machine.leader] = machine
        if machine.unit:
            self.by_unit.setdefault(machine.unit, machine)
        if not machine.timestamp.is_set():
            machine.timestamp = self.clock()
        machine.started = True
        self.save(machine)
        for listener in self.on_new:
            listener(machine)

    def save(self, machine: Machine) -> None:
        if not machine.started or machine.is_host:
            return
        try:
            self.state.save(machine)
        except OSError as exc:
            log.error("Failed to save machine state file for %s: %s", machine.name, exc)

    def finalize(self, machine: Machine) -> None:
        """Forget a machine: state files gone, MachineRemoved if it had started."""
        if machine.is_host:
            return
        self.state.remove(machine)
        if self.by_name.get(machine.name) is machine:
            del self.by_name[machine.name]
            self.generation += 1
        if self.by_leader.get(machine.leader) is machine:
            del self.by_leader[machine.leader]
        if machine.unit and self.by_unit.get(machine.unit) is machine:
            del self.by_unit[machine.unit]
            # another machine sharing the unit takes the mapping over
            for other in self.by_name.values():
                if other.started and other.unit == machine.unit:
                    self.by_unit[machine.unit] = other
                    break
        if machine.started:
            machine.started = False
            for listener in self.on_removed:
                listener(machine)

    # reload

    def load_state(self) -> list[Machine]:
        """Load every state file into the table, unstarted; the caller decides what starts."""
        loaded: list[Machine] = []
        for name in sorted(self.state.names()):
            if name in self.by_name:
                continue
            machine = Machine(name=name)
            self.state.load(machine)
            self.by_name[name] = machine
            self.generation += 1
            loaded.append(machine)
        return loaded
