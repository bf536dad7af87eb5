"""What each method does, once for both transports.

An action checks limits and arguments in upstream's order, asks the transport's authorizer (polkit
over D-Bus or Varlink, root bypassing), then acts through the core. The D-Bus and Varlink adaptors
only parse their wire format, pick the machine or image, and turn results and MachineErrors into
replies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..lifecycle import Lifecycle
from ..operations import Operations
from ..ops.addresses import AddressReader
from ..ops.os_release_cache import OsReleaseCache
from ..ops.usermap import IdMapIndex
from ..registry import Registry

# authorize(action, details): returns if the caller may, raises MachineError (AccessDenied or
# InteractiveAuthorizationRequired) if not. The action is the id after "org.freedesktop.machine1.".
Authorize = Callable[[str, dict[str, str]], Awaitable[None]]


@dataclass(slots=True)
class Services:
    """The daemon's parts that actions use."""

    registry: Registry
    lifecycle: Lifecycle
    uid_index: IdMapIndex
    gid_index: IdMapIndex
    addresses: AddressReader
    operations: Operations
    os_release: OsReleaseCache
    bus: Any = None  # the daemon's dbus-fast connection (login and shell reach systemd through it)
    user_scope: bool = False  # a per-user instance (pymachined --user)
