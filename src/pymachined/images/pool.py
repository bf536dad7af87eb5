"""The image pool: where it is and how large it may grow."""

from __future__ import annotations

from typing import Final

from . import paths

UINT64_MAX: Final = 2**64 - 1
_BTRFS_SUPER_MAGIC: Final = 0x9123683E


def _pool_quota() -> tuple[int, int, int, int] | None:
    from .btrfs import pool_quota
    from .fsinfo import fs_type_of

    pool = str(paths.current().pool)
    try:
        if fs_type_of(pool) != _BTRFS_SUPER_MAGIC:
            return None
    except OSError:
        return None
    return pool_quota(pool)


def pool_usage() -> int:
    """Bytes the pool's subtree qgroup references; UINT64_MAX where no quota tells (as 252 on ext4, tmpfs)."""
    quota = _pool_quota()
    return UINT64_MAX if quota is None else quota[0]


def pool_limit() -> int:
    """The pool's size limit (btrfs quota); UINT64_MAX where none is set."""
    quota = _pool_quota()
    return UINT64_MAX if quota is None else quota[2]
