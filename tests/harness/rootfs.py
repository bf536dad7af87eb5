"""Tiny container roots built from busybox-static, for systemd-nspawn tests."""

from __future__ import annotations

import shutil
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "test", "true", "mkdir", "ip", "hostname", "id")


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
