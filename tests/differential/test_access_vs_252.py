"""Getting into machines: copies, bind mounts and PTYs of real nspawn containers, as 252."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

import pytest
from dbus_fast import MessageType

from harness.client import connect, manager_call
from harness.differential import Transcript, assert_same_as_252
from harness.markers import needs_nspawn
from harness.rootfs import busybox_root
from harness.system import STATE_DIR, System, wait_for

pytestmark = needs_nspawn

PAYLOAD = "trap 'exit 0' TERM; echo > /ready; while :; do sleep 0.1; done"


def start_container(s: System, root: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    cgroup = s.make_cgroup(f"system.slice/{name}-nspawn.service")
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--keep-unit",
        "--register=yes",
        *extra,
        "-D",
        str(root),
        "-M",
        name,
        "/bin/sh",
        "-c",
        PAYLOAD,
    ]
    proc = subprocess.Popen(
        ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv],
        env=s.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: (root / "ready").exists() and (STATE_DIR / name).exists(), f"container {name}", process=proc)
    return proc


def stop_container(s: System, proc: subprocess.Popen[bytes], name: str) -> None:
    s.machinectl("terminate", name)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def host_tree(base: Path) -> Path:
    """A tree with the kinds of things a copy must reproduce."""
    tree = base / "tree"
    (tree / "sub/deeper").mkdir(parents=True)
    (tree / "file").write_text("content\n")
    (tree / "sub/exec").write_text("#!/bin/sh\n")
    (tree / "sub/exec").chmod(0o751)
    (tree / "sub/deeper/data").write_bytes(bytes(range(256)) * 64)
    os.link(tree / "file", tree / "hardlink")
    (tree / "link").symlink_to("file")
    (tree / "dangling").symlink_to("/nonexistent/target")
    os.mkfifo(tree / "fifo")
    os.utime(tree / "file", (1_600_000_000, 1_600_000_000))
    return tree


def listing(path: Path) -> str:
    return subprocess.run(
        ["sh", "-c", "find . | sort | while read f; do stat -c '%n %F %a %s %h %Y' \"$f\"; done"],
        cwd=path,
        capture_output=True,
        text=True,
    ).stdout.replace(str(int(path.stat().st_mtime)), "<dir-mtime>")


@pytest.mark.parametrize("private_users", [False, True], ids=["plain", "private-users"])
def test_copy_round_trip_and_errors(tmp_path: Path, private_users: bool) -> None:
    def scenario(s: System, t: Transcript) -> None:
        root = busybox_root(s.workdir / "root")
        (root / "etc/secret-link").symlink_to("/etc/shadow")
        extra = ["--private-users=pick", "--private-users-ownership=chown"] if private_users else []
        proc = start_container(s, root, "cp", *extra)
        try:
            shift = int(s.manager_call("GetMachineUIDShift", "s", "cp").stdout.split()[1])
            t.extra_patterns.append((re.compile(rf"\b{shift}\b"), "<shift>"))
            t.note("shifted", str(shift > 0))
            # userdb names the container's UIDs (nss-systemd and userdbctl, our socket only)
            only = ["env", "SYSTEMD_ONLY_USERDB=io.systemd.Machine"]
            t.run(*only, "getent", "passwd", str(shift + 1000))
            t.run(*only, "getent", "group", "vg-cp-5")
            t.run(*only, "userdbctl", "--no-pager", "-N", "-s", "io.systemd.Machine", "user", "vu-cp-0")
            tree = host_tree(s.workdir)
            t.machinectl("copy-to", "cp", str(tree), "/tree")
            t.note("inside after copy-to", listing(root / "tree"))
            t.run("stat", "-c", "%u:%g", str(root / "tree/file"))
            t.machinectl("copy-to", "cp", str(tree / "file"), "/tree/file")
            (tree / "file").write_text("changed\n")
            t.machinectl("copy-to", "--force", "cp", str(tree / "file"), "/tree/file")
            t.run("cat", str(root / "tree/file"))
            t.machinectl("copy-from", "cp", "/tree", str(s.workdir / "back"))
            t.run("diff", "-r", "--no-dereference", str(tree), str(s.workdir / "back"))
            t.run("stat", "-c", "%u:%g", str(s.workdir / "back/file"))
            t.machinectl("copy-from", "cp", "/etc/secret-link", str(s.workdir / "secret"))
            t.run("readlink", str(s.workdir / "secret"))
            t.note("secret is a symlink", str((s.workdir / "secret").is_symlink()))
            # error paths
            manager = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
            for method, sig, args in (
                ("CopyToMachine", "sss", ["cp", "relative", "/x"]),
                ("CopyToMachine", "sss", ["cp", str(tree), "relative"]),
                ("CopyToMachine", "sss", ["cp", "/", "/"]),
                ("CopyToMachine", "sss", ["cp", "/nonexistent/dir/file", "/x"]),
                ("CopyFromMachine", "sss", ["cp", "/nonexistent", str(s.workdir / "n")]),
                ("CopyToMachineWithFlags", "ssst", ["cp", str(tree), "/y", "2"]),
                ("CopyToMachine", "sss", [".host", str(tree), "/y"]),
                ("CopyToMachine", "sss", ["nosuch", str(tree), "/y"]),
            ):
                t.busctl("call", *manager, method, sig, *args)
        finally:
            stop_container(s, proc, "cp")

    assert_same_as_252(scenario, tmp_path)


def test_bind_mount_errors(tmp_path: Path) -> None:
    """252 binds through nspawn's propagation tunnel, which does not connect inside this test sandbox
    (it answers EINVAL there); pymachined attaches with the new mount API instead. So only the
    checks made before mounting are compared here; tests/integration/test_access.py proves the mounts."""

    def scenario(s: System, t: Transcript) -> None:
        root = busybox_root(s.workdir / "root")
        proc = start_container(s, root, "bd")
        userns = s.userns_leader("machine-uns.scope", "0 100000 65536")
        t.leaders.append(userns.pid)
        t.manager("RegisterMachine", "sayssus", "uns", 0, "", "container", userns.pid, "")
        try:
            shared = s.workdir / "shared"
            shared.mkdir()
            manager = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
            for args in (
                ["bd", "relative", "/x", "false", "false"],
                ["bd", "/tmp//x", "/x", "false", "false"],
                ["bd", "/tmp/../x", "/x", "false", "false"],
                ["bd", "/tmp/./x", "/x", "false", "false"],
                ["bd", str(shared), "rel", "false", "false"],
                ["bd", str(shared), "/a//b", "false", "false"],
                ["uns", str(shared), "/x", "false", "false"],
                [".host", str(shared), "/x", "false", "false"],
                ["nosuch", "/x", "/x", "false", "false"],
            ):
                t.busctl("call", *manager, "BindMountMachine", "sssbb", *args)
            t.machinectl("bind", "uns", str(shared))
        finally:
            stop_container(s, proc, "bd")

    assert_same_as_252(scenario, tmp_path)


async def pty_round_trip(name: str, leader: int) -> str:
    bus = await connect(unix_fds=True)
    reply = await bus.call(manager_call("OpenMachinePTY", "s", [name]))
    bus.disconnect()
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        return f"error {reply.error_name}: {reply.body[0]}"
    master = reply.unix_fds[reply.body[0]]
    path = reply.body[1]
    try:
        if leader:
            subprocess.run(
                [
                    "nsenter",
                    "-t",
                    str(leader),
                    "-m",
                    "-r",
                    "/bin/busybox",
                    "sh",
                    "-c",
                    f"echo hello-from-inside > {path}",
                ],
                check=True,
                timeout=10,
            )
        else:
            with open(path, "w") as slave:
                slave.write("hello-from-host\n")
        data = os.read(master, 100).decode()
    finally:
        os.close(master)
    return f"{path} {data.strip()}"


def test_open_pty(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        root = busybox_root(s.workdir / "root")
        proc = start_container(s, root, "pt")
        try:
            leader = int(s.machinectl("show", "-p", "Leader", "--value", "pt").stdout)
            t.note("OpenMachinePTY pt", asyncio.run(pty_round_trip("pt", leader)))
            t.note("OpenMachinePTY .host", asyncio.run(pty_round_trip(".host", 0)))
            vm = t.leader("machine-vm.scope")
            t.manager("RegisterMachine", "sayssus", "vm", 0, "", "vm", vm.pid, "")
            t.note("OpenMachinePTY vm", asyncio.run(pty_round_trip("vm", 0)))
            t.note("OpenMachinePTY nosuch", asyncio.run(pty_round_trip("nosuch", 0)))
            # no systemd and no bus inside: login and shell say what is missing
            t.manager("OpenMachineLogin", "s", "pt")
            t.manager("OpenMachineShell", "sssasas", "pt", "", "", 0, 0)
            t.manager("OpenMachineShell", "sssasas", "pt", "root", "relative", 0, 0)
            t.manager("OpenMachineShell", "sssasas", "pt", "root", "/bin/sh", 0, 1, "FOO")
            t.manager("OpenMachineShell", "sssasas", "pt", "root", "/bin/sh", 0, 2, "A=1", "A=2")
            t.manager("OpenMachineLogin", "s", ".host")
            t.manager("OpenMachineShell", "sssasas", ".host", "", "", 0, 0)
            t.manager("OpenMachineLogin", "s", "vm")
        finally:
            stop_container(s, proc, "pt")

    steps = dict(assert_same_as_252(scenario, tmp_path))
    assert re.fullmatch(r"/dev/pts/\d+ hello-from-inside", steps["OpenMachinePTY pt"])
    assert re.fullmatch(r"/dev/pts/\d+ hello-from-host", steps["OpenMachinePTY .host"])
