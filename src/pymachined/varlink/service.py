"""io.systemd.service on the machine sockets: Ping, SetLogLevel, GetEnvironment (Reload is declared, not bound)."""

from __future__ import annotations

import os
from typing import Final

from ..logs import LEVELS, LogSettings
from .idl_files import read_idl
from .server import PERMISSION_DENIED, Handler, Interface, Parameters, VarlinkCall, VarlinkError

INTERFACE: Final = "io.systemd.service"


def _check_privileged(call: VarlinkCall) -> None:
    """Only root or the daemon's own user (sd-varlink's varlink_check_privileged_peer)."""
    if call.peer.uid not in (0, os.getuid()):
        raise VarlinkError(PERMISSION_DENIED)


def service_interface(settings: LogSettings) -> Interface:
    async def ping(call: VarlinkCall, parameters: Parameters) -> Parameters:
        return {}

    async def set_log_level(call: VarlinkCall, parameters: Parameters) -> Parameters:
        level = parameters.get("level")
        if type(level) is not int or not 0 <= level < len(LEVELS):
            raise VarlinkError("org.varlink.service.InvalidParameter", {"parameter": "level"})
        _check_privileged(call)
        settings.set_level(LEVELS[level])
        return {}

    async def get_environment(call: VarlinkCall, parameters: Parameters) -> Parameters:
        _check_privileged(call)
        return {"environment": [f"{key}={value}" for key, value in os.environ.items()]}

    methods: dict[str, Handler] = {"Ping": ping, "SetLogLevel": set_log_level, "GetEnvironment": get_environment}
    return Interface(INTERFACE, read_idl(INTERFACE), methods)
