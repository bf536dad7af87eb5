"""The image pool beyond what 252 can be compared on: cancelled clones, reflinks, GPT metadata, the operations limit."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dbus_fast import Message, MessageType

from harness.client import connect, manager_call
from harness.system import System, wait_for

POOL = Path("/var/lib/machines")
ROOT_X86_64 = uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
SECTOR = 512


def big_tree(root: Path, files: int = 20000) -> None:
    """A directory image whose clone takes seconds: many small files in many directories."""
    for d in range(files // 200):
        sub = root / "data" / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(200):
            (sub / f"f{f}").write_bytes(b"x")


def clone_dirs() -> list[str]:
    return sorted(e for e in os.listdir(POOL) if e.startswith("copy"))


def assert_healthy(machined: System) -> None:
    (POOL / "small").mkdir(exist_ok=True)
    assert machined.manager_call("CloneImage", "ssb", "small", "small2", "false").returncode == 0
    listing = machined.manager_call("ListImages")
    assert listing.returncode == 0, listing.stderr
    assert '"small2"' in listing.stdout


# a. a client leaving mid-clone


def test_disconnect_mid_clone_leaves_no_partial_image(machined: System) -> None:
    big_tree(POOL / "big")

    async def clone_and_leave() -> None:
        bus = await connect()
        await bus.send(manager_call("CloneImage", "ssb", ["big", "copy", False]))
        await asyncio.to_thread(wait_for, lambda: (POOL / "copy/data").exists(), "the clone to start")
        bus.disconnect()
        await bus.wait_for_disconnect()

    asyncio.run(clone_and_leave())
    wait_for(lambda: not (POOL / "copy").exists(), "the partial clone to go", timeout=20)
    time.sleep(0.3)
    assert not (POOL / "copy").exists()
    listing = machined.manager_call("ListImages")
    assert listing.returncode == 0 and '"copy"' not in listing.stdout
    assert_healthy(machined)
    assert "copy" not in os.listdir(POOL)


# b. reflinks where the pool's file system has them, a plain copy elsewhere


@contextmanager
def loop_pool(tmp_path: Path, mkfs: list[str]) -> Iterator[None]:
    backing = tmp_path / "pool.img"
    with open(backing, "wb") as f:
        f.truncate(1 << 30)
    subprocess.run([*mkfs, str(backing)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(backing), str(POOL)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(POOL)], check=True, capture_output=True)
        backing.unlink()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _clone_big_file(machined: System) -> tuple[Path, Path, bool]:
    (POOL / "src/etc").mkdir(parents=True)
    blob = POOL / "src/blob"
    with open(blob, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
    result = machined.manager_call("CloneImage", "ssb", "src", "dst", "false")
    assert result.returncode == 0, result.stderr
    copy = POOL / "dst/blob"
    assert _digest(copy) == _digest(blob)
    frag = [
        subprocess.run(["filefrag", "-v", str(p)], capture_output=True, text=True, check=True) for p in (blob, copy)
    ]
    return blob, copy, all("shared" in r.stdout for r in frag)


def test_reflink_clone_on_xfs(machined: System, tmp_path: Path) -> None:
    with loop_pool(tmp_path, ["mkfs.xfs", "-q", "-m", "reflink=1"]):
        _blob, _copy, shared = _clone_big_file(machined)
        assert shared, "the clone does not share extents with its source"


def test_copy_fallback_on_ext4(machined: System, tmp_path: Path) -> None:
    with loop_pool(tmp_path, ["mkfs.ext4", "-q", "-F"]):
        blob, copy, shared = _clone_big_file(machined)
        assert not shared
        assert os.stat(copy).st_size == os.stat(blob).st_size == 64 << 20


# c. metadata of a GPT-partitioned raw image


def gpt_image(path: Path, partition: Path, type_guid: uuid.UUID) -> None:
    """A disk image with a GPT whose one partition (at 1 MiB) holds the bytes of `partition`."""
    data = partition.read_bytes()
    first = 2048
    last = first + len(data) // SECTOR - 1
    total = last + 1 + 2048
    entry = type_guid.bytes_le + uuid.uuid4().bytes_le + struct.pack("<QQQ", first, last, 0)
    entry += "root".encode("utf-16-le").ljust(72, b"\0")
    entries = entry.ljust(128 * 128, b"\0")
    entries_crc = zlib.crc32(entries)
    disk_guid = uuid.uuid4().bytes_le

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = struct.pack(
            "<8sIIIIQQQQ16sQIII",
            b"EFI PART",
            0x00010000,
            92,
            0,
            0,
            current,
            backup,
            34,
            total - 34,
            disk_guid,
            entries_lba,
            128,
            128,
            entries_crc,
        )
        fields = fields[:16] + struct.pack("<I", zlib.crc32(fields)) + fields[20:]
        return fields.ljust(SECTOR, b"\0")

    mbr = bytearray(SECTOR)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, min(total - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.truncate(total * SECTOR)
        f.write(mbr)
        f.write(header(1, total - 1, 2))
        f.write(entries)
        f.seek(first * SECTOR)
        f.write(data)
        f.seek((total - 33) * SECTOR)
        f.write(entries)
        f.write(header(total - 1, 1, total - 33))


def test_metadata_of_gpt_raw_image(machined: System, tmp_path: Path) -> None:
    content = tmp_path / "root"
    (content / "etc").mkdir(parents=True)
    (content / "etc/os-release").write_text('ID=gpttest\nPRETTY_NAME="GPT Test"\n')
    (content / "etc/hostname").write_text("gpthost\n")
    part = tmp_path / "part.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(content), "-E", "root_owner=0:0", str(part), "8M"],
        check=True,
        capture_output=True,
    )
    gpt_image(POOL / "disk.raw", part, ROOT_X86_64)
    osrel = machined.manager_call("GetImageOSRelease", "s", "disk")
    assert osrel.returncode == 0, osrel.stderr
    assert osrel.stdout.strip() == 'a{ss} 2 "ID" "gpttest" "PRETTY_NAME" "GPT Test"'
    hostname = machined.manager_call("GetImageHostname", "s", "disk")
    assert hostname.stdout.strip() == 's "gpthost"', hostname.stderr
    # a GPT without any root partition: nothing to read
    gpt_image(POOL / "other.raw", part, uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"))
    assert machined.manager_call("GetImageHostname", "s", "other").returncode != 0


# d. at most 64 image operations at a time


def test_operations_limit(machined: System) -> None:
    big_tree(POOL / "big", files=6000)

    async def flood() -> tuple[Message, list[str]]:
        first = await connect()
        for i in range(64):
            await first.send(manager_call("CloneImage", "ssb", ["big", f"copy{i}", False]))
        await asyncio.sleep(0.3)
        second = await connect()
        refused = await second.call(manager_call("CloneImage", "ssb", ["big", "copy64", False]))
        also = await second.call(manager_call("CleanPool", "s", ["hidden"]))
        assert refused is not None and also is not None
        first.disconnect()  # cancels the 64 clones
        await first.wait_for_disconnect()
        second.disconnect()
        return refused, [str(also.error_name), *also.body]

    refused, clean = asyncio.run(flood())
    assert refused.message_type is MessageType.ERROR
    assert (refused.error_name, refused.body) == (
        "org.freedesktop.DBus.Error.LimitsExceeded",
        ["Too many ongoing operations."],
    )
    assert clean == ["org.freedesktop.DBus.Error.LimitsExceeded", "Too many ongoing operations."]
    wait_for(lambda: not clone_dirs(), "the cancelled clones to go", timeout=30)
    assert_healthy(machined)


def test_clone_preserves_everything(machined: System) -> None:
    """Owners, modes, times, hard links, device nodes, ACLs, file capabilities, trusted.* attributes."""
    image = Path("/var/lib/machines/full")
    (image / "etc").mkdir(parents=True)
    data = image / "etc/data"
    data.write_text("content\n")
    os.chown(data, 1234, 2345)
    os.chmod(data, 0o4751)
    os.utime(data, (1_600_000_000, 1_600_000_000))
    os.link(data, image / "etc/twin")
    os.mknod(image / "null", 0o666 | 0o020000, os.makedev(1, 3))
    subprocess.run(["setfacl", "-m", "u:4321:rw", str(image / "etc")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:777:r", str(image / "etc")], check=True)
    subprocess.run(["setcap", "cap_net_raw+ep", str(image / "etc/data")], check=True)
    os.setxattr(image / "etc", "trusted.note", b"kept")
    os.setxattr(data, "user.label", b"u")
    result = machined.manager_call("CloneImage", "ssb", "full", "copy", "false")
    assert result.returncode == 0, result.output
    clone = Path("/var/lib/machines/copy")

    def facts(root: Path) -> list[str]:
        out = []
        for path in sorted(root.rglob("*")):
            st = os.lstat(path)
            xattrs = sorted(
                (n, os.getxattr(path, n, follow_symlinks=False)) for n in os.listxattr(path, follow_symlinks=False)
            )
            out.append(
                f"{path.relative_to(root)} {st.st_mode:o} {st.st_uid}:{st.st_gid} {st.st_nlink} "
                f"{st.st_rdev} {st.st_mtime_ns if not path.is_dir() else ''} {xattrs}"
            )
        return out

    assert facts(clone) == facts(image)
    assert (
        "user:4321:rw-" in subprocess.run(["getfacl", "-p", str(clone / "etc")], capture_output=True, text=True).stdout
    )
    assert (
        "cap_net_raw=ep" in subprocess.run(["getcap", str(clone / "etc/data")], capture_output=True, text=True).stdout
    )
    assert os.stat(clone / "etc/data").st_ino == os.stat(clone / "etc/twin").st_ino
