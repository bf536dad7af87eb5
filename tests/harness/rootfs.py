"""Tiny container roots built from busybox-static, for systemd-nspawn tests."""

from __future__ import annotations

import shutil
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    "sh",
    "sleep",
    "cat",
    "echo",
    "ls",
    "test",
    "true",
    "mkdir",
    "ip",
    "hostname",
    "id",
    "mount",
    "umount",
    "ln",
    "stat",
    "readlink",
    "tty",
    "chmod",
)


def busybox_root(path: Path, os_id: str = "busyboxtest", version_id: str = "1") -> Path:
    """A minimal root: busybox, its applets, /etc/os-release and the mount points nspawn wants."""
    for sub in ("bin", "etc", "usr/lib", "proc", "sys", "dev", "tmp", "run", "var"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, path / "bin/busybox")
    for applet in APPLETS:
        link = path / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (path / "usr/lib/os-release").write_text(
        f'ID={os_id}\nVERSION_ID={version_id}\nNAME="Busybox Test"\nPRETTY_NAME="Busybox Test {version_id}"\n'
    )
    (path / "etc/os-release").symlink_to("../usr/lib/os-release")
    (path / "etc/machine-id").write_text("")
    return path


# Run by the host's sh in a fresh mount namespace: make `root` the namespace's root as nspawn does
# (bind onto itself, pivot_root, detach the old root), give it /proc and a devpts instance of its
# own, then become `sleep` inside. The PID stays the same throughout (exec all the way).
CONTAINER_INIT = """set -e
mount --make-rprivate /
mount --bind "$1" "$1"
cd "$1"
mkdir -p .oldroot
pivot_root . .oldroot
exec /bin/busybox sh -c '
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /dev
mkdir /dev/pts
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
umount -l /.oldroot
echo > /run/ready
exec sleep 1000000'
"""
