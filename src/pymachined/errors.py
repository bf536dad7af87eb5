"""The one error table: core errors and how each transport names them.

The core raises MachineError carrying the upstream identity of a failure; the
D-Bus adaptor turns it into an error name and text with `dbus_error`, the
Varlink adaptor into an error name with `varlink_error`.
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from enum import Enum
from typing import Final


class ErrorKind(Enum):
    """Identity of a failure, independent of the transport."""

    NO_SUCH_MACHINE = "NoSuchMachine"
    NO_SUCH_IMAGE = "NoSuchImage"
    NO_MACHINE_FOR_PID = "NoMachineForPID"
    MACHINE_EXISTS = "MachineExists"
    NO_PRIVATE_NETWORKING = "NoPrivateNetworking"
    NO_SUCH_USER_MAPPING = "NoSuchUserMapping"
    NO_SUCH_GROUP_MAPPING = "NoSuchGroupMapping"
    INVALID_ARGS = "InvalidArgs"
    NOT_SUPPORTED = "NotSupported"
    LIMITS_EXCEEDED = "LimitsExceeded"
    FAILED = "Failed"
    ACCESS_DENIED = "AccessDenied"
    INTERACTIVE_AUTHORIZATION_REQUIRED = "InteractiveAuthorizationRequired"
    JOB_FAILED = "JobFailed"
    ERRNO = "errno"
    FORWARDED = "forwarded"


@dataclass(slots=True)
class MachineError(Exception):
    """A failure with the identity upstream gives it."""

    kind: ErrorKind
    message: str
    errno: int = 0
    name: str = ""  # only for FORWARDED: the remote error name, kept verbatim

    def __str__(self) -> str:
        return self.message


MACHINE1: Final = "org.freedesktop.machine1"
DBUS_ERROR: Final = "org.freedesktop.DBus.Error"

_DBUS_NAMES: Final[dict[ErrorKind, str]] = {
    ErrorKind.NO_SUCH_MACHINE: f"{MACHINE1}.NoSuchMachine",
    ErrorKind.NO_SUCH_IMAGE: f"{MACHINE1}.NoSuchImage",
    ErrorKind.NO_MACHINE_FOR_PID: f"{MACHINE1}.NoMachineForPID",
    ErrorKind.MACHINE_EXISTS: f"{MACHINE1}.MachineExists",
    ErrorKind.NO_PRIVATE_NETWORKING: f"{MACHINE1}.NoPrivateNetworking",
    ErrorKind.NO_SUCH_USER_MAPPING: f"{MACHINE1}.NoSuchUserMapping",
    ErrorKind.NO_SUCH_GROUP_MAPPING: f"{MACHINE1}.NoSuchGroupMapping",
    ErrorKind.INVALID_ARGS: f"{DBUS_ERROR}.InvalidArgs",
    ErrorKind.NOT_SUPPORTED: f"{DBUS_ERROR}.NotSupported",
    ErrorKind.LIMITS_EXCEEDED: f"{DBUS_ERROR}.LimitsExceeded",
    ErrorKind.FAILED: f"{DBUS_ERROR}.Failed",
    ErrorKind.ACCESS_DENIED: f"{DBUS_ERROR}.AccessDenied",
    ErrorKind.INTERACTIVE_AUTHORIZATION_REQUIRED: f"{DBUS_ERROR}.InteractiveAuthorizationRequired",
    ErrorKind.JOB_FAILED: "org.freedesktop.systemd1.JobFailed",
}

_VARLINK_NAMES: Final[dict[ErrorKind, str]] = {
    ErrorKind.NO_SUCH_MACHINE: "io.systemd.Machine.NoSuchMachine",
    ErrorKind.MACHINE_EXISTS: "io.systemd.Machine.MachineExists",
    ErrorKind.NO_PRIVATE_NETWORKING: "io.systemd.Machine.NoPrivateNetworking",
    ErrorKind.NO_SUCH_USER_MAPPING: "io.systemd.Machine.NoSuchUserMapping",
    ErrorKind.NO_SUCH_GROUP_MAPPING: "io.systemd.Machine.NoSuchGroupMapping",
    ErrorKind.NO_SUCH_IMAGE: "io.systemd.MachineImage.NoSuchImage",
    ErrorKind.INVALID_ARGS: "org.varlink.service.InvalidParameter",
    ErrorKind.ACCESS_DENIED: "org.varlink.service.PermissionDenied",
    ErrorKind.INTERACTIVE_AUTHORIZATION_REQUIRED: "io.systemd.InteractiveAuthenticationRequired",
}

# sd-bus errno_to_bus_error_name(); anything else becomes System.Error.<ENAME>.
_ERRNO_NAMES: Final[dict[int, str]] = {
    errno_mod.ENOMEM: f"{DBUS_ERROR}.NoMemory",
    errno_mod.EPERM: f"{DBUS_ERROR}.AccessDenied",
    errno_mod.EACCES: f"{DBUS_ERROR}.AccessDenied",
    errno_mod.EINVAL: f"{DBUS_ERROR}.InvalidArgs",
    errno_mod.ESRCH: f"{DBUS_ERROR}.UnixProcessIdUnknown",
    errno_mod.ENOENT: f"{DBUS_ERROR}.FileNotFound",
    errno_mod.EEXIST: f"{DBUS_ERROR}.FileExists",
    errno_mod.ETIMEDOUT: f"{DBUS_ERROR}.Timeout",
    errno_mod.ETIME: f"{DBUS_ERROR}.Timeout",
    errno_mod.EIO: f"{DBUS_ERROR}.IOError",
    errno_mod.ENETRESET: f"{DBUS_ERROR}.Disconnected",
    errno_mod.ECONNABORTED: f"{DBUS_ERROR}.Disconnected",
    errno_mod.ECONNRESET: f"{DBUS_ERROR}.Disconnected",
    errno_mod.EOPNOTSUPP: f"{DBUS_ERROR}.NotSupported",
    errno_mod.EADDRNOTAVAIL: f"{DBUS_ERROR}.BadAddress",
    errno_mod.ENOBUFS: f"{DBUS_ERROR}.LimitsExceeded",
    errno_mod.EADDRINUSE: f"{DBUS_ERROR}.AddressInUse",
    errno_mod.EBADMSG: f"{DBUS_ERROR}.InconsistentMessage",
}

# sd-bus bus_error_name_to_errno() for the names machined meets from other services.
_NAME_ERRNOS: Final[dict[str, int]] = {
    f"{DBUS_ERROR}.Failed": errno_mod.EACCES,
    f"{DBUS_ERROR}.NoMemory": errno_mod.ENOMEM,
    f"{DBUS_ERROR}.ServiceUnknown": errno_mod.EHOSTUNREACH,
    f"{DBUS_ERROR}.NameHasNoOwner": errno_mod.ENXIO,
    f"{DBUS_ERROR}.NoReply": errno_mod.ETIMEDOUT,
    f"{DBUS_ERROR}.IOError": errno_mod.EIO,
    f"{DBUS_ERROR}.BadAddress": errno_mod.EADDRNOTAVAIL,
    f"{DBUS_ERROR}.NotSupported": errno_mod.EOPNOTSUPP,
    f"{DBUS_ERROR}.LimitsExceeded": errno_mod.ENOBUFS,
    f"{DBUS_ERROR}.AccessDenied": errno_mod.EACCES,
    f"{DBUS_ERROR}.AuthFailed": errno_mod.EACCES,
    f"{DBUS_ERROR}.NoServer": errno_mod.EHOSTDOWN,
    f"{DBUS_ERROR}.Timeout": errno_mod.ETIMEDOUT,
    f"{DBUS_ERROR}.NoNetwork": errno_mod.ENONET,
    f"{DBUS_ERROR}.AddressInUse": errno_mod.EADDRINUSE,
    f"{DBUS_ERROR}.Disconnected": errno_mod.ECONNRESET,
    f"{DBUS_ERROR}.InvalidArgs": errno_mod.EINVAL,
    f"{DBUS_ERROR}.FileNotFound": errno_mod.ENOENT,
    f"{DBUS_ERROR}.FileExists": errno_mod.EEXIST,
    f"{DBUS_ERROR}.UnknownMethod": errno_mod.EBADR,
    f"{DBUS_ERROR}.UnknownObject": errno_mod.EBADR,
    f"{DBUS_ERROR}.UnknownInterface": errno_mod.EBADR,
    f"{DBUS_ERROR}.UnknownProperty": errno_mod.EBADR,
    f"{DBUS_ERROR}.PropertyReadOnly": errno_mod.EROFS,
    f"{DBUS_ERROR}.UnixProcessIdUnknown": errno_mod.ESRCH,
    f"{DBUS_ERROR}.InconsistentMessage": errno_mod.EBADMSG,
    f"{DBUS_ERROR}.InteractiveAuthorizationRequired": errno_mod.EACCES,
    "org.freedesktop.systemd1.NoSuchUnit": errno_mod.ENOENT,
    "org.freedesktop.systemd1.LoadFailed": errno_mod.EIO,
}


def no_such_machine(name: str) -> MachineError:
    return MachineError(ErrorKind.NO_SUCH_MACHINE, f"No machine '{name}' known")


def no_machine_for_pid(pid: int) -> MachineError:
    return MachineError(ErrorKind.NO_MACHINE_FOR_PID, f"PID {pid} does not belong to any known machine")


def machine_exists(name: str) -> MachineError:
    return MachineError(ErrorKind.MACHINE_EXISTS, f"Machine '{name}' already exists")


def invalid_args(message: str) -> MachineError:
    return MachineError(ErrorKind.INVALID_ARGS, message)


def not_supported(message: str) -> MachineError:
    return MachineError(ErrorKind.NOT_SUPPORTED, message)


def failed(message: str) -> MachineError:
    return MachineError(ErrorKind.FAILED, message)


def from_errno(err: int, fmt: str | None = None) -> MachineError:
    """An errno failure; `fmt` may carry `%m` for the strerror text (sd_bus_error_set_errnof)."""
    text = os.strerror(err)
    message = text if fmt is None else fmt.replace("%m", text)
    return MachineError(ErrorKind.ERRNO, message, errno=err)


def forwarded(name: str, message: str) -> MachineError:
    """A remote D-Bus error passed on unchanged (name and text)."""
    return MachineError(ErrorKind.FORWARDED, message, name=name)


def errno_from_bus_error(name: str) -> int:
    """The errno libsystemd maps a D-Bus error name to (EIO when unknown)."""
    if name.startswith("System.Error."):
        return getattr(errno_mod, name.removeprefix("System.Error."), errno_mod.EIO)
    return _NAME_ERRNOS.get(name, errno_mod.EIO)


def errno_bus_name(err: int) -> str:
    name = _ERRNO_NAMES.get(err)
    if name is not None:
        return name
    symbol = errno_mod.errorcode.get(err)
    return f"System.Error.{symbol}" if symbol else f"{DBUS_ERROR}.Failed"


def dbus_error(error: MachineError) -> tuple[str, str]:
    """(error name, message) as systemd-machined 252 replies."""
    if error.kind is ErrorKind.ERRNO:
        return errno_bus_name(error.errno), error.message
    if error.kind is ErrorKind.FORWARDED:
        return error.name, error.message
    return _DBUS_NAMES[error.kind], error.message


def varlink_error(error: MachineError) -> str:
    """Varlink error name for a core error."""
    if error.kind is ErrorKind.ERRNO:
        return "io.systemd.System"
    return _VARLINK_NAMES.get(error.kind, "io.systemd.System")
