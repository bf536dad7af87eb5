"""Varlink interface definitions, read only as far as checking method calls needs (sd-varlink-idl's rules)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# The IDL, parsed only as far as validating method calls needs (sd-varlink-idl's rules).


@dataclass(frozen=True, slots=True)
class IdlType:
    """A type of the Varlink IDL: a scalar, a named reference, ?T, []T, [string]T, a struct or an enum."""

    kind: str
    element: IdlType | None = None
    name: str = ""
    fields: tuple[tuple[str, IdlType], ...] = ()
    values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IdlMethod:
    """A method's input fields, the names of all its fields, and whether it requires `more`."""

    inputs: tuple[tuple[str, IdlType], ...]
    names: frozenset[str]
    requires_more: bool


@dataclass(slots=True)
class Idl:
    """The named types and methods of one interface."""

    name: str
    types: dict[str, IdlType] = field(default_factory=dict)
    methods: dict[str, IdlMethod] = field(default_factory=dict)


IDL_TOKEN: Final = re.compile(r"\s*(?:(#[^\n]*)|(->|\[\]|\[string\]|[():,?])|([A-Za-z_][A-Za-z0-9_.]*))")
IDL_SCALARS: Final = frozenset({"bool", "int", "float", "string", "object"})
REQUIRES_MORE_COMMENT: Final = "# [Requires 'more' flag]"


class IdlReader:
    """A recursive-descent reader of IDL text."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, bool]] = []
        requires_more = False
        position = 0
        while match := IDL_TOKEN.match(text, position):
            position = match.end()
            if match.group(1) is not None:
                requires_more = requires_more or match.group(1).strip() == REQUIRES_MORE_COMMENT
                continue
            self.tokens.append((match.group(2) or match.group(3), requires_more))
            requires_more = False
        if text[position:].strip():
            raise ValueError(f"cannot parse IDL at offset {position}")
        self.index = 0

    def peek(self) -> str:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if not token or (expected is not None and token != expected):
            raise ValueError(f"IDL: expected {expected or 'a token'}, found {token!r}")
        self.index += 1
        return token

    def interface(self) -> Idl:
        self.take("interface")
        idl = Idl(self.take())
        while self.peek():
            requires_more = self.tokens[self.index][1]
            keyword = self.take()
            name = self.take()
            if keyword == "type":
                idl.types[name] = self.type()
            elif keyword == "method":
                self.take("(")
                inputs = self.members()
                self.take("->")
                self.take("(")
                outputs = self.members()
                names = frozenset(n for n, _ in inputs.fields) | frozenset(n for n, _ in outputs.fields)
                idl.methods[name] = IdlMethod(inputs.fields, names, requires_more)
            elif keyword == "error":
                self.take("(")
                self.members()
            else:
                raise ValueError(f"IDL: unexpected {keyword!r}")
        return idl

    def type(self) -> IdlType:
        token = self.take()
        if token == "?":
            return IdlType("nullable", self.type())
        if token == "[]":
            return IdlType("array", self.type())
        if token == "[string]":
            return IdlType("map", self.type())
        if token == "(":
            return self.members()
        if token in IDL_SCALARS:
            return IdlType(token)
        return IdlType("named", name=token)

    def members(self) -> IdlType:
        """Read a struct or an enum after its opening parenthesis."""
        fields: list[tuple[str, IdlType]] = []
        values: set[str] = set()
        if self.peek() == ")":
            self.take()
            return IdlType("struct")
        while True:
            name = self.take()
            if self.peek() == ":":
                self.take()
                fields.append((name, self.type()))
            else:
                values.add(name)
            if self.take() == ")":
                break
            self.index -= 1
            self.take(",")
        if fields and values:
            raise ValueError("IDL: struct mixed with enum")
        return IdlType("enum", values=frozenset(values)) if values else IdlType("struct", fields=tuple(fields))


def parse_idl(text: str) -> Idl:
    """Parse an interface definition."""
    return IdlReader(text).interface()


def conforms(value: Any, idl_type: IdlType, types: Mapping[str, IdlType]) -> bool:
    """Whether a JSON value passes sd-varlink's type check (null only where nullable; ints also as strings)."""
    kind = idl_type.kind
    if kind == "nullable":
        assert idl_type.element is not None
        return value is None or conforms(value, idl_type.element, types)
    if value is None:
        return False
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array" or kind == "map":
        element = idl_type.element
        assert element is not None
        if kind == "array" and isinstance(value, list):
            return all(conforms(item, element, types) for item in value)
        if kind == "map" and isinstance(value, dict):
            return all(conforms(item, element, types) for item in value.values())
        return False
    if kind == "enum":
        return isinstance(value, str) and value in idl_type.values
    if kind == "struct":
        names = frozenset(name for name, _ in idl_type.fields)
        return isinstance(value, dict) and bad_field(value, idl_type.fields, names, types) is None
    named = types.get(idl_type.name)
    return named is None or conforms(value, named, types)


def bad_field(
    parameters: Mapping[str, Any],
    fields: Iterable[tuple[str, IdlType]],
    names: frozenset[str],
    types: Mapping[str, IdlType],
) -> str | None:
    """The first field that fails validation: declared fields in order, then undeclared keys."""
    for name, idl_type in fields:
        if not conforms(parameters.get(name), idl_type, types):
            return name
    for name in parameters:
        if name not in names:
            return name
    return None
