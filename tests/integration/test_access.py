"""Bind mounts into real nspawn containers (pymachined attaches with the new mount API)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from differential.test_access_vs_252 import start_container, stop_container
from harness.markers import needs_nspawn
from harness.rootfs import busybox_root
from harness.system import System

pytestmark = needs_nspawn


def inside(leader: int, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(leader), "-m", "-r", "/bin/busybox", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_machinectl_bind_into_nspawn(machined: System) -> None:
    root = busybox_root(machined.workdir / "root")
    proc = start_container(machined, root, "bd")
    try:
        leader = int(machined.machinectl("show", "-p", "Leader", "--value", "bd").stdout)
        shared = machined.workdir / "shared"
        shared.mkdir()
        (shared / "hello").write_text("from the host\n")
        result = machined.machinectl("bind", "--mkdir", "--read-only", "bd", str(shared), "/mnt/shared")
        assert result.returncode == 0, result.output
        assert inside(leader, "cat /mnt/shared/hello").stdout == "from the host\n"
        refused = inside(leader, "echo x > /mnt/shared/new")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        # visible at once both ways: a file the host adds shows up inside
        (shared / "later").write_text("added later\n")
        assert inside(leader, "cat /mnt/shared/later").stdout == "added later\n"
        # a single file, writable
        single = machined.workdir / "single"
        single.write_text("one file\n")
        assert machined.machinectl("bind", "--mkdir", "bd", str(single), "/etc/single").returncode == 0
        assert inside(leader, "cat /etc/single && echo more >> /etc/single").returncode == 0
        assert single.read_text() == "one file\nmore\n"
        # nothing leaked onto the host
        assert not Path("/mnt/shared").exists()
        missing = machined.machinectl("bind", "bd", str(shared), "/no/such/place")
        assert missing.returncode == 1
        assert "Failed to mount" in missing.stderr and "No such file or directory" in missing.stderr
    finally:
        stop_container(machined, proc, "bd")
