"""A btrfs pool (loop file mounted on /var/lib/machines): subvolumes, snapshots, quota — identical to 252."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.system import System

POOL = Path("/var/lib/machines")
IMAGE = "/org/freedesktop/machine1/image"
PATTERNS = [
    (re.compile(r"\b\w{3} \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \w+"), "<date>"),
    (re.compile(r"; [^;\n]* ago"), "; <ago>"),
    (re.compile(r"\b1\d{15}\b"), "<usec>"),
    (re.compile(r"(CreationTimestamp|ModificationTimestamp)=.*"), r"\1=<time>"),
    # btrfs-progs 6.2 prints the "path" of a higher-level qgroup from an unterminated buffer (NUL, leftovers)
    (re.compile(r"\S*<(\d+) member qgroups?\x00?>"), r"<\1 members>"),
]


def _tree(root: Path, hostname: str) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=test\nPRETTY_NAME="Test OS 1"\n')
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/blob").write_bytes(b"\0" * (1 << 20))


def _btrfs_pool(workdir: Path) -> Path:
    backing = workdir / "pool.btrfs"
    with open(backing, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(backing)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(backing), str(POOL)], check=True, capture_output=True)
    return backing


def _umount() -> None:
    subprocess.run(["umount", str(POOL)], check=True, capture_output=True)


def settle() -> None:
    """Wait for btrfs to finish accounting: a quota rescan in progress makes 252 (and us) report no usage."""
    subprocess.run(["sync", "-f", str(POOL)], check=True)
    subprocess.run(["btrfs", "quota", "rescan", "-w", str(POOL)], capture_output=True, check=False)


def qgroups(t: Transcript) -> None:
    settle()
    t.run("btrfs", "qgroup", "show", "-pcre", "--raw", str(POOL))


def clean(s: System, t: Transcript, *argv: str) -> None:
    """machinectl clean prints removals in 252's hash order (random per process): compare them sorted."""
    result = s.machinectl("clean", *argv)
    lines = result.stderr.splitlines()
    removed = sorted(line for line in lines if line.startswith("Removed image "))
    rest = [line for line in lines if not line.startswith("Removed image ")]
    t.note(f"machinectl clean {' '.join(argv)}", f"rc={result.returncode}\n{result.stdout}{removed}\n{rest}")


def pool_properties(t: Transcript) -> None:
    for prop in ("PoolPath", "PoolUsage", "PoolLimit"):
        t.busctl(
            "get-property",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            prop,
        )


def test_btrfs_pool(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        _btrfs_pool(s.workdir)
        try:
            subprocess.run(["btrfs", "subvolume", "create", str(POOL / "sub")], check=True, capture_output=True)
            _tree(POOL / "sub", "subhost")
            _tree(POOL / "dir", "dirhost")
            settle()
            t.machinectl("list-images")
            t.manager("ListImages")
            pool_properties(t)
            for name in ("sub", "dir"):
                t.machinectl("image-status", name)
                t.machinectl("show-image", name)
                t.manager("GetImageHostname", "s", name)
            t.machinectl("clone", "sub", "sub2")
            t.machinectl("clone", "dir", "dir2")
            t.machinectl("clone", "sub", "subro", "--read-only")
            t.run("btrfs", "property", "get", str(POOL / "subro"), "ro")
            t.run("btrfs", "property", "get", str(POOL / "dir2"), "ro")
            t.machinectl("list-images")
            t.machinectl("show-image", "dir2")
            t.machinectl("read-only", "sub2")
            t.run("btrfs", "property", "get", str(POOL / "sub2"), "ro")
            t.machinectl("show-image", "sub2")
            t.machinectl("read-only", "sub2", "no")
            t.run("btrfs", "property", "get", str(POOL / "sub2"), "ro")
            t.machinectl("set-limit", "sub", "100M")
            t.machinectl("set-limit", "200M")
            qgroups(t)
            pool_properties(t)
            t.machinectl("show-image", "sub")
            t.machinectl("image-status", "sub")
            t.manager("SetImageLimit", "st", "dir", 1 << 20)
            t.manager("SetImageLimit", "st", "sub", 2**64 - 1)
            t.manager("SetPoolLimit", "t", 2**64 - 1)
            settle()
            t.machinectl("show-image", "sub")
            pool_properties(t)
            # with quota on: limits, clones inherit the qgroup set-up and limits, removal drops qgroups
            t.machinectl("set-limit", "sub", "100M")
            t.machinectl("clone", "sub", "sub3")
            t.machinectl("clone", "dir", "dir3")
            subprocess.run(["btrfs", "subvolume", "create", str(POOL / "sub/nested")], check=True, capture_output=True)
            (POOL / "sub/nested/file").write_text("nested\n")
            t.machinectl("clone", "sub", "sub4", "--read-only")
            t.run("cat", str(POOL / "sub4/nested/file"))
            t.run("btrfs", "property", "get", str(POOL / "sub4/nested"), "ro")
            qgroups(t)
            t.machinectl("show-image", "sub3")
            t.machinectl("show-image", "dir3")
            t.machinectl("image-status", "sub4")
            t.machinectl("list-images")
            t.manager("ListImages")
            pool_properties(t)
            t.machinectl("remove", "sub2")
            t.machinectl("remove", "sub4")
            qgroups(t)
            t.machinectl("list-images")
            clean(s, t, "--all")
            qgroups(t)
            t.machinectl("list-images", "--all")
            t.run("ls", "-A", str(POOL))
        finally:
            _umount()

    assert_same_as_252(scenario, tmp_path, PATTERNS)
