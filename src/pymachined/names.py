"""Name validation and escaping: machine names, unit names, bus labels, C escapes."""

from __future__ import annotations

import string
from typing import Final

HOST_NAME_MAX: Final = 64
UNIT_NAME_MAX: Final = 256
HOST_MACHINE: Final = ".host"

_ASCII_LETTERS: Final = frozenset(string.ascii_letters.encode())
_ASCII_ALNUM: Final = frozenset((string.ascii_letters + string.digits).encode())
_HOSTNAME_CHARS: Final = frozenset((string.ascii_letters + string.digits + "-.").encode())
_UNIT_CHARS: Final = frozenset(string.ascii_letters + string.digits + ":-_.\\")
UNIT_TYPES: Final = (
    "service",
    "mount",
    "swap",
    "socket",
    "target",
    "device",
    "automount",
    "timer",
    "path",
    "slice",
    "scope",
)


def hostname_is_valid(name: str) -> bool:
    """True if `name` is a valid host name by systemd's rules (no flags)."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return False
    if not raw or len(raw) > HOST_NAME_MAX:
        return False
    if any(b not in _HOSTNAME_CHARS for b in raw):
        return False
    for label in raw.split(b"."):
        # empty label: leading dot, trailing dot or ".."
        if not label or label.startswith(b"-") or label.endswith(b"-"):
            return False
    return True


def machine_name_is_valid(name: str) -> bool:
    """True if `name` may be registered as a machine (".host" is reserved)."""
    return name != HOST_MACHINE and hostname_is_valid(name)


def bus_label_escape(name: str) -> str:
    """Escape `name` into one object path element, as sd-bus does."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw:
        return "_"
    out: list[str] = []
    for i, b in enumerate(raw):
        if b in _ASCII_LETTERS or (i > 0 and b in _ASCII_ALNUM):
            out.append(chr(b))
        else:
            out.append(f"_{b:02x}")
    return "".join(out)


def bus_label_unescape(label: str) -> str:
    """Reverse bus_label_escape leniently (invalid escapes are kept literally)."""
    if label == "_":
        return ""
    raw = label.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    hexdigits = b"0123456789abcdefABCDEF"
    while i < len(raw):
        b = raw[i]
        if b == ord("_") and i + 2 < len(raw) and raw[i + 1] in hexdigits and raw[i + 2] in hexdigits:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(b)
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _unit_prefix_is_valid(prefix: str) -> bool:
    return bool(prefix) and all(c in _UNIT_CHARS for c in prefix)


def unit_name_is_valid(name: str) -> bool:
    """True for a valid plain (`a.service`) or instance (`a@b.service`) unit name."""
    if not name or len(name) >= UNIT_NAME_MAX:
        return False
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix not in UNIT_TYPES:
        return False
    prefix, at, instance = stem.partition("@")
    if not _unit_prefix_is_valid(prefix):
        return False
    if at:
        return bool(instance) and all(c in _UNIT_CHARS or c == "@" for c in instance)
    return True


def unit_type(name: str) -> str:
    """The suffix of a unit name ("scope", "service", …)."""
    return name.rpartition(".")[2]


def unit_name_escape(text: str) -> str:
    """Escape free text for use in a unit name (`-` → `\\x2d`, `/` → `-`)."""
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif (ch in string.ascii_letters or ch in string.digits or ch in ":_") or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def unit_name_unescape_label(label: str) -> str:
    """Unit name from the last element of a systemd unit object path."""
    return bus_label_unescape(label)


_CESCAPE: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
    "'": "\\'",
}


def cescape(text: str) -> str:
    """C-style escape as systemd's cescape(): control and non-ASCII bytes in octal."""
    if text.isascii() and text.isprintable() and not any(c in text for c in "\\\"'"):
        return text
    out: list[str] = []
    for b in text.encode("utf-8", "surrogateescape"):
        ch = chr(b)
        if ch in _CESCAPE:
            out.append(_CESCAPE[ch])
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\{b >> 6 & 7}{b >> 3 & 7}{b & 7}")
        else:
            out.append(ch)
    return "".join(out)
