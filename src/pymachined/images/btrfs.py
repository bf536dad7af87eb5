"""btrfs subvolumes and quota groups, as far as images need them (the pool on btrfs)."""

from __future__ import annotations

import os
import subprocess
from typing import Final

from .pool import UINT64_MAX

BTRFS: Final = "btrfs"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BTRFS, *argv], capture_output=True, text=True, check=False)


def subvolume_quota(path: str) -> tuple[int, int, int, int] | None:
    """(referenced, exclusive, max referenced, max exclusive) of the subvolume's qgroup; None without quota."""
    try:
        result = _run("qgroup", "show", "--raw", "-r", "-e", "-f", path)
    except OSError:
        return None
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        words = line.split()
        if len(words) >= 5 and "/" in words[0] and words[1].isdigit():
            referenced, exclusive = int(words[1]), int(words[2])
            return referenced, exclusive, _limit(words[3]), _limit(words[4])
    return None


def _limit(word: str) -> int:
    return int(word) if word.isdigit() else UINT64_MAX


def create_subvolume(path: str) -> bool:
    """Create a subvolume at `path`; False where subvolumes are not supported (not btrfs)."""
    try:
        result = _run("subvolume", "create", path)
    except OSError:
        return False
    return result.returncode == 0


def snapshot(source: str, target: str, read_only: bool) -> None:
    argv = ["subvolume", "snapshot", *(["-r"] if read_only else []), source, target]
    result = _run(*argv)
    if result.returncode != 0:
        raise OSError(5, result.stderr.strip() or "btrfs subvolume snapshot failed")


def delete_subvolume(path: str) -> None:
    result = _run("subvolume", "delete", "-R", path) if _supports_recursive() else _run("subvolume", "delete", path)
    if result.returncode != 0:
        raise OSError(16, result.stderr.strip() or "btrfs subvolume delete failed")


def _supports_recursive() -> bool:
    return os.environ.get("PYMACHINED_BTRFS_NO_RECURSIVE") is None


def set_qgroup_limit(path: str, limit: int) -> None:
    result = _run("qgroup", "limit", "none" if limit == UINT64_MAX else str(limit), path)
    if result.returncode != 0:
        raise OSError(25, result.stderr.strip() or "btrfs qgroup limit failed")  # ENOTTY as 252 on failure


def enable_quota(path: str) -> None:
    result = _run("quota", "enable", path)
    if result.returncode != 0:
        raise OSError(25, result.stderr.strip() or "btrfs quota enable failed")
