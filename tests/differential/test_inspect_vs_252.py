"""Looking into machines: UID shift and mapping, OS release, root directory, addresses — as 252."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from dbus_fast import MessageType

from harness.client import connect, manager_call
from harness.differential import Transcript, assert_same_as_252
from harness.rootfs import busybox_root
from harness.system import System, wait_for


def test_uid_shift_and_mapping(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        ctr = s.userns_leader("machine-ctr.scope", "0 100000 65536")
        cplx = s.userns_leader("machine-cplx.scope", "0 200000 1000;1000 300000 10")
        small = s.userns_leader("machine-small.scope", "0 400000 1000")
        gids = s.userns_leader("machine-gids.scope", "0 500000 65536", "0 600000 65536")
        plain = s.spawn_leader("machine-plain.scope")
        vm = s.spawn_leader("machine-vm.scope")
        t.leaders += [ctr.pid, cplx.pid, small.pid, gids.pid, plain.pid, vm.pid]
        for name, leader, cls in (
            ("ctr", ctr, "container"),
            ("cplx", cplx, "container"),
            ("small", small, "container"),
            ("gids", gids, "container"),
            ("plain", plain, "container"),
            ("vm", vm, "vm"),
        ):
            t.manager("RegisterMachine", "sayssus", name, 0, "", cls, leader.pid, "")
        for name in ("ctr", "cplx", "small", "gids", "plain", "vm", ".host", "nosuch"):
            t.manager("GetMachineUIDShift", "s", name)
        for name, uid in (
            ("ctr", 0),
            ("ctr", 1000),
            ("ctr", 65535),
            ("ctr", 70000),
            ("ctr", 4294967295),
            ("cplx", 1005),
            ("cplx", 999),
            ("cplx", 1010),
            ("plain", 1000),
            ("vm", 5),
            (".host", 5),
            ("nosuch", 5),
            ("nosuch", 4294967295),
            ("gids", 7),
        ):
            t.manager("MapFromMachineUser", "su", name, uid)
            t.manager("MapFromMachineGroup", "su", name, uid)
        for outer in (
            101000,
            100000,
            165535,
            165536,
            300005,
            200999,
            400001,
            500007,
            600007,
            5,
            65535,
            65536,
            4294967295,
            99999999,
        ):
            t.manager("MapToMachineUser", "u", outer)
            t.manager("MapToMachineGroup", "u", outer)
        t.machinectl("status", "ctr")

    assert_same_as_252(scenario, tmp_path)


async def open_root(name: str) -> tuple[str, list[str]]:
    bus = await connect(unix_fds=True)
    reply = await bus.call(manager_call("OpenMachineRootDirectory", "s", [name]))
    bus.disconnect()
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        return f"error {reply.error_name}: {reply.body[0]}", []
    fd = reply.unix_fds[reply.body[0]]
    try:
        entries = sorted(os.listdir(fd))
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    return f"fd, directory={is_dir}", entries


def test_os_release_and_root_directory(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        good = busybox_root(s.workdir / "good", os_id="goodos", version_id="7")
        only_usr = busybox_root(s.workdir / "onlyusr", os_id="usronly", version_id="2")
        (only_usr / "etc/os-release").unlink()
        none = busybox_root(s.workdir / "none")
        (none / "etc/os-release").unlink()
        (none / "usr/lib/os-release").unlink()
        escape = busybox_root(s.workdir / "escape")
        (escape / "etc/os-release").unlink()
        (escape / "usr/lib/os-release").unlink()
        # links that would reach the host's os-release if they were followed outside the root
        (escape / "etc/os-release").symlink_to("../../../../../../../../etc/os-release.host-never")
        (escape / "usr/lib/os-release").symlink_to("/proc/1/root/etc/os-release")
        leaders = {}
        for name, root in (("good", good), ("onlyusr", only_usr), ("none", none), ("escape", escape)):
            leaders[name] = s.chroot_leader(f"machine-{name}.scope", root)
            t.leaders.append(leaders[name].pid)
            t.manager("RegisterMachine", "sayssus", name, 0, "", "container", leaders[name].pid, str(root))
        vm = s.spawn_leader("machine-vm.scope")
        t.leaders.append(vm.pid)
        t.manager("RegisterMachine", "sayssus", "vm", 0, "", "vm", vm.pid, "")
        for name in ("good", "onlyusr", "none", "escape", "vm", ".host", "nosuch"):
            t.manager("GetMachineOSRelease", "s", name)
        t.machinectl("list")
        for name in ("good", "vm", ".host", "nosuch"):
            status, entries = asyncio.run(open_root(name))
            t.note(f"OpenMachineRootDirectory {name}", f"{status}\n" + "\n".join(entries))

    assert_same_as_252(scenario, tmp_path)


def test_nss_mymachines_resolves_container_addresses(tmp_path: Path) -> None:
    from differential.test_registry_vs_252 import NETNS_LEADER, _settled

    def scenario(s: System, t: Transcript) -> None:
        cgroup = s.make_cgroup("machine.slice/machine-webhost.scope")
        proc = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec unshare --net sh -c '{NETNS_LEADER}'"],
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: _settled(proc.pid), "netns leader")
        t.leaders.append(proc.pid)
        t.manager("RegisterMachine", "sayssus", "webhost", 0, "", "container", proc.pid, "")
        shared = t.leader("machine-sharedhost.scope")
        t.manager("RegisterMachine", "sayssus", "sharedhost", 0, "", "container", shared.pid, "")
        for argv in (
            ["getent", "hosts", "webhost"],
            ["getent", "ahosts", "webhost"],
            ["getent", "ahostsv4", "webhost"],
            ["getent", "ahostsv6", "webhost"],
            ["getent", "hosts", "sharedhost"],
            ["getent", "hosts", "nosuchmachine"],
        ):
            t.run(*argv)
        proc.kill()
        proc.wait()

    steps = dict(assert_same_as_252(scenario, tmp_path))
    assert "192.0.2.5" in steps["getent ahostsv4 webhost"]
    assert "fd00::5" in steps["getent hosts webhost"]
