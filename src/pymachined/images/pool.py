"""The image pool: where it is and how large it may grow."""

from __future__ import annotations

from pathlib import Path
from typing import Final

POOL_PATH: Final = Path("/var/lib/machines")
UINT64_MAX: Final = 2**64 - 1


def pool_usage() -> int:
    """Bytes the pool references; UINT64_MAX where no btrfs quota tells (as 252 on ext4, tmpfs)."""
    return UINT64_MAX


def pool_limit() -> int:
    """The pool's size limit; UINT64_MAX where no btrfs quota sets one."""
    return UINT64_MAX
