"""Method returns whose body was marshalled once and is sent again as bytes.

ListMachines with a thousand machines spends most of its time marshalling the same array again; the
Manager keeps the marshalled body until the registry changes and answers with a PremarshalledReply,
which writes the header itself (the fields dbus-fast writes for a method return, in its order and
byte for byte) followed by the stored body. dbus-fast calls `_marshall` when it writes a message;
tests/unit/test_premarshalled.py holds the two byte-identical.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageType

LITTLE_ENDIAN: Final = b"l"
PROTOCOL_VERSION: Final = 1
FIELD_REPLY_SERIAL: Final = 5
FIELD_DESTINATION: Final = 6
FIELD_SIGNATURE: Final = 8
_FIXED: Final = struct.Struct("<cBBBIII")
# code, one-character signature, NUL, then a u32: the value of a "u", the length of an "s" (bytes and NUL follow)
_U32_FIELD: Final = struct.Struct("<BB1sxI")
_SIGNATURE_FIELD: Final = struct.Struct("<BB1sxB")  # code, signature "g", length (then the bytes and a NUL)


@dataclass(frozen=True, slots=True)
class Marshalled:
    """A reply body already in wire format, for the method's out signature."""

    data: bytes


def marshal_body(signature: str, body: list[Any]) -> Marshalled:
    """The wire bytes of `body`, as dbus-fast marshals it after a header."""
    message = Message(message_type=MessageType.METHOD_RETURN, reply_serial=1, signature=signature, body=body)
    message.serial = 1
    data = message._marshall(False)
    (fields_length,) = struct.unpack_from("<I", data, 12)
    return Marshalled(bytes(data[_align8(16 + fields_length) :]))


def _align8(n: int) -> int:
    return (n + 7) & ~7


class PremarshalledReply(Message):
    """The method return to `call` carrying `body`, already marshalled for `signature`."""

    def __init__(self, call: Message, signature: str, body: Marshalled) -> None:
        super().__init__(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial, destination=call.sender)
        self.body_signature = signature
        self.body_data = body.data

    def _marshall(self, negotiate_unix_fd: bool) -> bytearray:
        fields = bytearray(_U32_FIELD.pack(FIELD_REPLY_SERIAL, 1, b"u", self.reply_serial))
        if self.destination:
            name = self.destination.encode()
            fields += b"\0" * (-len(fields) % 8)
            fields += _U32_FIELD.pack(FIELD_DESTINATION, 1, b"s", len(name)) + name + b"\0"
        if self.body_signature:
            signature = self.body_signature.encode()
            fields += b"\0" * (-len(fields) % 8)
            fields += _SIGNATURE_FIELD.pack(FIELD_SIGNATURE, 1, b"g", len(signature)) + signature + b"\0"
        data = bytearray(
            _FIXED.pack(
                LITTLE_ENDIAN,
                MessageType.METHOD_RETURN.value,
                0,
                PROTOCOL_VERSION,
                len(self.body_data),
                self.serial,
                len(fields),
            )
        )
        data += fields
        data += b"\0" * (-len(data) % 8)
        data += self.body_data
        return data
