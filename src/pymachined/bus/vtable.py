"""Declarative D-Bus interfaces, in the spirit of sd-bus vtables.

Members are listed in introspection order. A method handler receives the call
context, the object the path resolved to and the decoded arguments; it returns
the reply body (a list) or an awaitable of it, or raises MachineError.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .premarshalled import Marshalled

if TYPE_CHECKING:
    from .dispatch import Call

Body = list[Any]


@dataclass(frozen=True, slots=True)
class WithFds:
    """A reply body with file descriptors to pass ('h' values index `fds`); closed once sent."""

    body: Body
    fds: list[int]


Handler = Callable[..., "Body | WithFds | Marshalled | Awaitable[Body | WithFds | Marshalled]"]
Getter = Callable[[Any], Any]
Setter = Callable[["Call", Any, Any], None]


@dataclass(frozen=True, slots=True)
class Arg:
    type: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Handler
    in_args: tuple[Arg, ...] = ()
    out_args: tuple[Arg, ...] = ()
    privileged: bool = False
    in_signature: str = field(init=False)
    out_signature: str = field(init=False)

    def __post_init__(self) -> None:  # joined once: they are compared and used on every call
        object.__setattr__(self, "in_signature", "".join(a.type for a in self.in_args))
        object.__setattr__(self, "out_signature", "".join(a.type for a in self.out_args))


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    type: str
    getter: Getter
    emits_change: str = "const"  # "const", "false", "true", "invalidates"
    hidden: bool = False
    setter: Setter | None = None
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    args: tuple[Arg, ...] = ()

    @property
    def signature(self) -> str:
        return "".join(a.type for a in self.args)


Member = Method | Property | Signal


@dataclass(slots=True)
class Interface:
    """One D-Bus interface: its members in introspection order, and indexes into them."""

    name: str
    members: Sequence[Member]
    methods: dict[str, Method] = field(init=False)
    properties: dict[str, Property] = field(init=False)

    def __post_init__(self) -> None:
        self.methods = {m.name: m for m in self.members if isinstance(m, Method)}
        self.properties = {p.name: p for p in self.members if isinstance(p, Property)}


def args(spec: str) -> tuple[Arg, ...]:
    """Arguments from a compact spec: "s name, ay id" (a bare type is an unnamed arg)."""
    result: list[Arg] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        type_, _, name = part.partition(" ")
        result.append(Arg(type_, name or None))
    return tuple(result)
