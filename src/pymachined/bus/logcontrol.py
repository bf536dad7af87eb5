"""org.freedesktop.LogControl1 at /org/freedesktop/LogControl1: the daemon's log level and target."""

from __future__ import annotations

from typing import Any, Final

from ..logs import LogSettings
from .dispatch import Call
from .vtable import Interface, Property

PATH: Final = "/org/freedesktop/LogControl1"
INTERFACE: Final = "org.freedesktop.LogControl1"


def _set_level(call: Call, settings: LogSettings, value: Any) -> None:
    settings.set_level(value)


def _set_target(call: Call, settings: LogSettings, value: Any) -> None:
    settings.set_target(value)


LOG_CONTROL_INTERFACE: Final = Interface(
    INTERFACE,
    [
        Property("LogLevel", "s", lambda s: s.level, emits_change="false", setter=_set_level, privileged=True),
        Property("LogTarget", "s", lambda s: s.target, emits_change="false", setter=_set_target, privileged=True),
        Property("SyslogIdentifier", "s", lambda s: s.identifier, emits_change="false"),
    ],
)
