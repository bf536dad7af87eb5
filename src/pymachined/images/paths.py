"""Where images are looked for and where new ones go: the system's paths, or a user's (per-user instance)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SYSTEM_SEARCH_PATHS: Final = (
    "/etc/machines",
    "/run/machines",
    "/var/lib/machines",
    "/var/lib/container",
    "/usr/local/lib/machines",
    "/usr/lib/machines",
)


@dataclass(frozen=True, slots=True)
class ImagePaths:
    """The search path in order, the pool new images go to, whether `.host` is an image, where locks go."""

    search_paths: tuple[str, ...]
    pool: Path
    with_host: bool
    lock_dir: str


SYSTEM: Final = ImagePaths(SYSTEM_SEARCH_PATHS, Path("/var/lib/machines"), True, "/run/systemd/nspawn/locks")


def user_paths(home: str, runtime_dir: str, state_home: str | None = None) -> ImagePaths:
    """A user's: $XDG_RUNTIME_DIR/machines, $XDG_STATE_HOME/machines (the pool), ~/.local/lib/machines; no `.host`."""
    state = state_home or os.path.join(home, ".local/state")
    pool = os.path.join(state, "machines")
    return ImagePaths(
        (os.path.join(runtime_dir, "machines"), pool, os.path.join(home, ".local/lib/machines")),
        Path(pool),
        False,
        os.path.join(runtime_dir, "systemd/nspawn/locks"),
    )


_current: ImagePaths = SYSTEM


def current() -> ImagePaths:
    return _current


def configure(paths: ImagePaths) -> None:
    """Set once at start-up, before anything looks for images."""
    global _current
    _current = paths
