"""What a machine is: the data machined keeps per machine and its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from .leader import PidRef
from .names import HOST_MACHINE, bus_label_escape

MACHINE_PATH_PREFIX: Final = "/org/freedesktop/machine1/machine/"


class MachineClass(Enum):
    """The kind of machine, as the Class property spells it."""

    CONTAINER = "container"
    VM = "vm"
    HOST = "host"
    UNKNOWN = ""

    @classmethod
    def from_string(cls, text: str) -> MachineClass | None:
        """Class named by `text` for registration: container, vm or "" (unknown)."""
        return {"container": cls.CONTAINER, "vm": cls.VM, "": cls.UNKNOWN}.get(text)


class MachineState(Enum):
    OPENING = "opening"
    RUNNING = "running"
    CLOSING = "closing"


@dataclass(slots=True)
class Timestamp:
    """A dual timestamp in microseconds (CLOCK_REALTIME and CLOCK_MONOTONIC)."""

    realtime: int = 0
    monotonic: int = 0

    def is_set(self) -> bool:
        return self.realtime > 0 or self.monotonic > 0


@dataclass(slots=True, eq=False)
class Machine:
    """One registered machine (or the host)."""

    name: str
    machine_class: MachineClass = MachineClass.UNKNOWN
    id: bytes = b""  # 16 bytes, or empty when unset
    service: str = ""
    root_directory: str = ""
    leader: int = 0
    unit: str = ""
    scope_job: str = ""
    netif: list[int] = field(default_factory=list)
    timestamp: Timestamp = field(default_factory=Timestamp)
    started: bool = False
    stopping: bool = False
    referenced: bool = False  # unit created by this daemon instance (CreateMachine)
    # beyond 252
    leader_ref: PidRef | None = None  # the leader pinned by pidfd
    supervisor_ref: PidRef | None = None  # the registering process, when it is not the leader
    subgroup: str = ""
    vsock_cid: int = 0
    ssh_address: str = ""
    ssh_private_key_path: str = ""
    uid: int = 0  # who registered it
    cgroup: str = ""  # the cgroup of its unit, when pymachined manages cgroups itself
    owns_cgroup: bool = False  # that cgroup was created by pymachined (CreateMachine, cgroupfs)
    object_path: str = field(init=False, repr=False)  # the name never changes: escaped once

    def __post_init__(self) -> None:
        self.object_path = MACHINE_PATH_PREFIX + bus_label_escape(self.name)

    @property
    def is_host(self) -> bool:
        return self.name == HOST_MACHINE

    @property
    def state(self) -> MachineState:
        if self.is_host:
            return MachineState.RUNNING
        if self.stopping:
            return MachineState.CLOSING
        if self.scope_job:
            return MachineState.OPENING
        return MachineState.RUNNING

    @property
    def leader_pidfd_id(self) -> int:
        return self.leader_ref.fd_id if self.leader_ref else 0

    @property
    def supervisor(self) -> int:
        return self.supervisor_ref.pid if self.supervisor_ref else 0

    @property
    def supervisor_pidfd_id(self) -> int:
        return self.supervisor_ref.fd_id if self.supervisor_ref else 0

    def release(self) -> None:
        """Close the pidfds this machine holds."""
        for ref in (self.leader_ref, self.supervisor_ref):
            if ref is not None:
                ref.close()

    @property
    def is_container_or_vm(self) -> bool:
        return self.machine_class in (MachineClass.CONTAINER, MachineClass.VM)
