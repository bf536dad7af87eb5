"""A premarshalled method return is byte for byte what dbus-fast writes for the same reply."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message

from pymachined.bus.premarshalled import PremarshalledReply, marshal_body

LISTING = [(f"m{i}", "container", "nspawn", f"/org/freedesktop/machine1/machine/m{i}") for i in range(50)]


def _call(sender: str | None, serial: int) -> Message:
    call = Message(path="/org/freedesktop/machine1", member="ListMachines", serial=serial)
    call.sender = sender
    return call


@pytest.mark.parametrize(
    ("signature", "body"),
    [
        ("a(ssso)", [LISTING]),
        ("a(ssso)", [[]]),
        ("a(ssso)", [LISTING[:1]]),
        ("o", ["/org/freedesktop/machine1/machine/_2ehost"]),
        ("a{ss}", [{"ID": "debian", "VERSION_ID": "12"}]),
        ("", []),
    ],
)
@pytest.mark.parametrize("sender", [":1.7", ":1.12345", None, ":1." + "9" * 40])
def test_same_bytes_as_dbus_fast(signature: str, body: list[Any], sender: str | None) -> None:
    for serial in (1, 255, 2**32 - 1):
        call = _call(sender, 77)
        expected = Message.new_method_return(call, signature, body)
        expected.serial = serial
        ours = PremarshalledReply(call, signature, marshal_body(signature, body))
        ours.serial = serial
        assert bytes(ours._marshall(False)) == bytes(expected._marshall(False))


def test_the_body_is_reused_for_every_caller() -> None:
    marshalled = marshal_body("a(ssso)", [LISTING])
    first = PremarshalledReply(_call(":1.1", 3), "a(ssso)", marshalled)
    second = PremarshalledReply(_call(":1.2", 9), "a(ssso)", marshalled)
    first.serial, second.serial = 10, 11
    a, b = first._marshall(False), second._marshall(False)
    assert a.endswith(marshalled.data) and b.endswith(marshalled.data) and a != b
