"""The image pool, step by step identical to systemd-machined 252 (tmpfs pool, private search paths)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.system import System

POOL = Path("/var/lib/machines")
VENDOR = Path("/usr/lib/machines")
RUNTIME = Path("/run/machines")
IMAGE = "/org/freedesktop/machine1/image"
PATTERNS = [
    (re.compile(r"\b\w{3} \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \w+"), "<date>"),
    (re.compile(r"; [^;\n]* ago"), "; <ago>"),
    (re.compile(r"\b1\d{15}\b"), "<usec>"),
    (re.compile(r"(CreationTimestamp|ModificationTimestamp)=.*"), r"\1=<time>"),
]


def _clear(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chattr", "-R", "-i", str(directory)], capture_output=True, check=False)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _tree(root: Path, hostname: str | None = None, machine_id: str | None = None) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text('ID=test\nPRETTY_NAME="Test OS 1"\nVERSION_ID=1\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    if hostname is not None:
        (root / "etc/hostname").write_text(hostname)
    if machine_id is not None:
        (root / "etc/machine-id").write_text(machine_id)
    (root / "etc/machine-info").write_text('PRETTY_HOSTNAME="Foo box"\nDEPLOYMENT=staging\n')


def make_images(workdir: Path) -> None:
    for directory in (POOL, VENDOR, RUNTIME, Path("/run/systemd/nspawn")):
        _clear(directory)
    _tree(POOL / "foo", "  myhost  \n", "0123456789abcdef0123456789abcdef\n")
    _tree(POOL / "bar", "# comment\n\nbarhost\n", "not-an-id\n")
    (POOL / "empty").mkdir()
    _tree(POOL / ".hidden")
    (POOL / "notanimage").write_text("x")
    (POOL / ".#foo.lck").write_text("")
    content = workdir / "rawroot"
    shutil.rmtree(content, ignore_errors=True)
    _tree(content, "rawhost\n", "fedcba9876543210fedcba9876543210\n")
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), "-E", "root_owner=0:0", str(POOL / "disk.raw"), "8M"],
        check=True,
        capture_output=True,
    )
    with open(POOL / "sparse.raw", "wb") as f:
        f.truncate(4 << 20)
    _tree(VENDOR / "vendor", "vendorhost\n")
    RUNTIME.mkdir(exist_ok=True)
    _tree(RUNTIME / "foo")  # shadows /var/lib/machines/foo in listings only


def image_call(t: Transcript, name: str, interface_member: str, signature: str = "", *values: object) -> None:
    label = "_2ehost" if name == ".host" else name
    argv = ["call", "org.freedesktop.machine1", f"{IMAGE}/{label}", "org.freedesktop.machine1.Image", interface_member]
    if signature:
        argv.append(signature)
    argv.extend(str(v) for v in values)
    t.busctl(*argv)


def test_listing_status_and_metadata(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        make_images(s.workdir)
        _clear(RUNTIME)
        t.machinectl("list-images")
        t.machinectl("list-images", "--all")
        t.manager("ListImages")
        for name in ("foo", "bar", "empty", ".hidden", "disk", "sparse", "vendor", ".host"):
            t.machinectl("image-status", name)
            t.machinectl("show-image", name)
            t.manager("GetImage", "s", name)
            for method in ("GetImageHostname", "GetImageMachineID", "GetImageMachineInfo", "GetImageOSRelease"):
                t.manager(method, "s", name)
        t.machinectl("show-image")
        for name in ("nosuch", "a/b", "..", ".#x", ""):
            t.manager("GetImage", "s", name)
            t.manager("GetImageHostname", "s", name)
        image_call(t, "foo", "GetHostname")
        image_call(t, "disk", "GetOSRelease")
        t.busctl("get-property", "org.freedesktop.machine1", f"{IMAGE}/foo", "org.freedesktop.machine1.Image", "Type")
        t.busctl("introspect", "--xml-interface", "org.freedesktop.machine1", f"{IMAGE}/nosuch")
        t.busctl("tree", "--list", "org.freedesktop.machine1")

    assert_same_as_252(scenario, tmp_path, PATTERNS)


def test_shadowing(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        make_images(s.workdir)
        t.manager("ListImages")
        t.busctl("get-property", "org.freedesktop.machine1", f"{IMAGE}/foo", "org.freedesktop.machine1.Image", "Path")
        _clear(RUNTIME)

    assert_same_as_252(scenario, tmp_path, PATTERNS)


def test_changes(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        make_images(s.workdir)
        _clear(RUNTIME)
        t.machinectl("clone", "foo", "foo2")
        t.machinectl("clone", "foo", "foo2")
        t.machinectl("clone", "disk", "disk2", "--read-only")
        t.machinectl("clone", "vendor", "vendor2")
        t.machinectl("list-images", "--all")
        t.run("cat", str(POOL / "foo2/etc/hostname"))
        t.run("stat", "-c", "%A %s", str(POOL / "disk2.raw"))
        t.machinectl("rename", "foo2", "foo3")
        t.machinectl("rename", "foo3", "bar")
        t.machinectl("rename", "foo3", "disk")
        t.machinectl("rename", "foo3", ".host")
        t.machinectl("rename", "vendor", "v2")
        t.machinectl("rename", ".host", "h2")
        t.machinectl("read-only", "foo3")
        t.run("lsattr", "-d", str(POOL / "foo3"))
        t.machinectl("read-only", "foo3", "no")
        t.machinectl("read-only", "disk2", "no")
        t.run("stat", "-c", "%A", str(POOL / "disk2.raw"))
        t.machinectl("read-only", "disk2", "yes")
        t.machinectl("read-only", "vendor")
        t.machinectl("read-only", ".host")
        t.machinectl("set-limit", "foo3", "1G")
        t.machinectl("set-limit", "1G")
        t.machinectl("set-limit", ".host", "1G")
        t.manager("SetImageLimit", "st", "foo3", 2**63)
        t.manager("SetPoolLimit", "t", 2**63)
        for name, new in (("a/b", "x"), ("foo3", "a/b"), ("foo3", ".."), ("nosuch", "x"), ("foo3", ".#x")):
            t.manager("RenameImage", "ss", name, new)
            t.manager("CloneImage", "ssb", name, new, "false")
        t.manager("MarkImageReadOnly", "sb", "nosuch", "true")
        t.manager("CleanPool", "s", "bogus")
        t.manager("RemoveImage", "s", "vendor")
        t.manager("RemoveImage", "s", ".host")
        t.manager("RemoveImage", "s", "a/b")
        image_call(t, ".host", "Remove")
        image_call(t, ".host", "SetLimit", "t", 1024)
        # a running nspawn holds the image's path lock: remove, rename, read-only are busy
        holder = open(POOL / ".#foo3.lck", "a+")  # noqa: SIM115 - held across the calls below
        fcntl.lockf(holder, fcntl.LOCK_EX)
        t.machinectl("remove", "foo3")
        t.machinectl("rename", "foo3", "foo4")
        t.machinectl("read-only", "foo3")
        t.manager("GetImageHostname", "s", "foo3")
        t.manager("CleanPool", "s", "all")
        holder.close()
        t.manager("CleanPool", "s", "hidden")
        t.machinectl("remove", "foo3", "disk2")
        t.machinectl("list-images", "--all")
        t.manager("CleanPool", "s", "all")
        t.machinectl("list-images", "--all")
        t.run("ls", "-A", str(POOL))
        _ = os  # keep the import for lock helpers

    assert_same_as_252(scenario, tmp_path, PATTERNS)
