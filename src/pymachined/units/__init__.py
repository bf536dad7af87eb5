"""Unit backends: who creates, stops and watches the units (scopes) machines live in.

`systemd1` asks systemd (PID 1) over the bus, as systemd-machined does. `cgroupfs` does the work
itself in the cgroup2 hierarchy, for hosts without systemd. Both report what happens to units
through the callbacks of `UnitEvents`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..machine import Machine

# A scope property as a client passed it: (name, D-Bus signature, value).
ScopeProperty = tuple[str, str, Any]


@dataclass(slots=True)
class UnitEvents:
    """What a backend tells the lifecycle about units and jobs."""

    unit_changed: Callable[[str], None] = lambda unit: None
    job_removed: Callable[[str, str, str], None] = lambda unit, job, result: None
    reloaded: Callable[[], None] = lambda: None
    cgroup_empty: Callable[[str], None] = lambda path: None
    extra: dict[str, Any] = field(default_factory=dict)


class UnitBackend(Protocol):
    name: str

    async def create_scope(self, machine: Machine, properties: list[ScopeProperty]) -> str:
        """Create the machine's scope with its leader inside; the start job's path, or ""."""
        ...

    async def stop(self, machine: Machine) -> str:
        """Stop the machine's unit; the stop job's path, or ""."""
        ...

    async def kill(self, machine: Machine, signum: int) -> None:
        """Signal every process of the machine's unit."""
        ...

    async def unit_active(self, machine: Machine) -> bool:
        """False once the unit is gone or inactive; True while it runs or nobody can tell."""
        ...

    async def job_pending(self, job: str) -> bool: ...

    def track(self, machine: Machine) -> None:
        """Start watching the machine's unit (after start or reload)."""
        ...

    async def release(self, machine: Machine) -> None:
        """The machine is gone: drop what the backend holds for it (references, cgroups)."""
        ...

    async def close(self) -> None: ...
