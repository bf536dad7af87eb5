"""System or per-user instance: which bus, where state, sockets and images live, who is trusted."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from .images.paths import SYSTEM, ImagePaths, user_paths


class ScopeError(Exception):
    """The per-user instance lacks what it needs ($XDG_RUNTIME_DIR)."""


@dataclass(frozen=True, slots=True)
class RuntimeScope:
    """Everything that differs between `pymachined` and `pymachined --user`."""

    user: bool
    state_dir: Path
    machine_socket_dir: Path
    userdb_socket: Path | None  # no userdb records for a user's machines
    socket_mode: int
    images: ImagePaths

    @property
    def with_host(self) -> bool:
        """The `.host` machine, there exactly when `.host` is an image."""
        return self.images.with_host


SYSTEM_SCOPE: Final = RuntimeScope(
    user=False,
    state_dir=Path("/run/systemd/machines"),
    machine_socket_dir=Path("/run/systemd/machine"),
    userdb_socket=Path("/run/systemd/userdb/io.systemd.Machine"),
    socket_mode=0o666,
    images=SYSTEM,
)


def relocated(scope: RuntimeScope, runtime_dir: Path) -> RuntimeScope:
    """The scope with its state directory and sockets under `runtime_dir` (for `make run` and tests)."""
    return replace(
        scope,
        state_dir=runtime_dir / "machines",
        machine_socket_dir=runtime_dir / "machine",
        userdb_socket=None if scope.userdb_socket is None else runtime_dir / "userdb/io.systemd.Machine",
    )


def user_scope(environ: Mapping[str, str] = os.environ) -> RuntimeScope:
    """The calling user's: $XDG_RUNTIME_DIR/systemd/{machines,machine}, sockets 0600, images under ~."""
    runtime_dir = environ.get("XDG_RUNTIME_DIR", "")
    if not runtime_dir.startswith("/"):
        raise ScopeError("$XDG_RUNTIME_DIR is not set to an absolute path; the per-user instance needs it")
    home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    state_home = environ.get("XDG_STATE_HOME") or None
    return RuntimeScope(
        user=True,
        state_dir=Path(runtime_dir, "systemd/machines"),
        machine_socket_dir=Path(runtime_dir, "systemd/machine"),
        userdb_socket=None,
        socket_mode=0o600,
        images=user_paths(home, runtime_dir, state_home),
    )
