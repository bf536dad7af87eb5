"""Looking into machines, beyond what the differential tests compare."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.markers import needs_nspawn
from harness.rootfs import busybox_root
from harness.system import STATE_DIR, System, wait_for

NETNS = (
    "ip link set lo up && ip link add host0 type veth peer name peer0 && ip link set host0 up && "
    "ip addr add 192.0.2.5/24 dev host0 && exec sleep infinity"
)


def addresses(s: System, name: str) -> str:
    return s.manager_call("GetMachineAddresses", "s", name).stdout


def test_addresses_stay_current_without_reconnecting(machined: System) -> None:
    cgroup = machined.make_cgroup("machine.slice/machine-live.scope")
    proc = subprocess.Popen(["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec unshare --net sh -c '{NETNS}'"])
    wait_for(lambda: Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep", "the netns leader")
    try:
        machined.register("live", proc.pid)
        assert addresses(machined, "live").startswith("a(iay) ")
        assert "2 4 192 0 2 5" in addresses(machined, "live")
        # add an address inside the container: the next answer has it
        subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-n", "ip", "addr", "add", "198.51.100.9/24", "dev", "host0"], check=True
        )
        assert "2 4 198 51 100 9" in addresses(machined, "live")
        subprocess.run(
            ["nsenter", "-t", str(proc.pid), "-n", "ip", "addr", "del", "192.0.2.5/24", "dev", "host0"], check=True
        )
        assert "2 4 192 0 2 5" not in addresses(machined, "live")
        # the answers are kept between changes, and an interface going takes its addresses along
        assert addresses(machined, "live") == addresses(machined, "live")
        subprocess.run(["nsenter", "-t", str(proc.pid), "-n", "ip", "link", "del", "host0"], check=True)
        assert "198 51 100 9" not in addresses(machined, "live")
        # one socket per namespace, opened once: no helper process is forked per call
        children = subprocess.run(["pgrep", "-P", str(machined.daemon.pid)], capture_output=True, text=True)
        assert children.stdout == ""
    finally:
        proc.kill()
        proc.wait()


def test_os_release_of_a_chroot_without_proc(machined: System) -> None:
    """252 answers "Child died abnormally." when the leader's root has no /proc; pymachined reads it."""
    root = busybox_root(machined.workdir / "bare", os_id="bare", version_id="3")
    leader = machined.chroot_leader("machine-bare.scope", root, own_mount_namespace=False)
    machined.register("bare", leader)
    assert machined.manager_call("GetMachineOSRelease", "s", "bare").stdout.startswith(
        'a{ss} 4 "ID" "bare" "VERSION_ID" "3"'
    )


def test_os_release_stays_current_inside_a_container(machined: System) -> None:
    """The answer is cached, but every change a process in the container could see shows at once:
    a rewrite, a replacement by rename, etc/os-release becoming a file, a mount over /etc."""
    root = busybox_root(machined.workdir / "osr", os_id="one", version_id="1")
    leader = machined.container_leader("machine-osr.scope", root)
    machined.register("osr", leader)

    def os_release() -> str:
        done = machined.manager_call("GetMachineOSRelease", "s", "osr")
        assert done.returncode == 0, done.output
        return done.stdout

    assert '"ID" "one" "VERSION_ID" "1"' in os_release()
    assert '"ID" "one" "VERSION_ID" "1"' in os_release()
    (root / "usr/lib/os-release").write_text("ID=one\nVERSION_ID=2\n")
    assert os_release() == 'a{ss} 2 "ID" "one" "VERSION_ID" "2"\n'
    (root / "usr/lib/os-release.new").write_text("ID=two\n")
    (root / "usr/lib/os-release.new").rename(root / "usr/lib/os-release")
    assert os_release() == 'a{ss} 1 "ID" "two"\n'
    (root / "etc/os-release").unlink()
    (root / "etc/os-release").write_text("ID=three\n")
    assert os_release() == 'a{ss} 1 "ID" "three"\n'
    # a mount only the container sees
    script = "mount -t tmpfs tmpfs /etc && echo ID=mounted > /etc/os-release"
    subprocess.run(["nsenter", "-t", str(leader.pid), "-m", "-r", "/bin/sh", "-c", script], check=True)
    assert os_release() == 'a{ss} 1 "ID" "mounted"\n'
    subprocess.run(["nsenter", "-t", str(leader.pid), "-m", "-r", "/bin/umount", "/etc"], check=True)
    assert os_release() == 'a{ss} 1 "ID" "three"\n'


@needs_nspawn
def test_private_network_nspawn_container(machined: System) -> None:
    root = busybox_root(machined.workdir / "root", os_id="privnet", version_id="9")
    nspawn = subprocess.Popen(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=yes",
            "--private-network",
            "-D",
            str(root),
            "-M",
            "pn",
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; echo > /ready; while :; do sleep 0.1; done",
        ],
        env=machined.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: (root / "ready").exists() and (STATE_DIR / "pn").exists(), "the container", process=nspawn)
        listing = machined.machinectl("list", "--no-legend").stdout.split()
        assert listing[:6] == ["pn", "container", "systemd-nspawn", "privnet", "9", "-"]
        # only loopback inside: an empty answer, not an error
        assert addresses(machined, "pn") == "a(iay) 0\n"
        leader = int(machined.machinectl("show", "-p", "Leader", "--value", "pn").stdout)
        subprocess.run(["nsenter", "-t", str(leader), "-n", "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["nsenter", "-t", str(leader), "-n", "ip", "addr", "add", "203.0.113.4/32", "dev", "lo"], check=True
        )
        assert addresses(machined, "pn") == "a(iay) 1 2 4 203 0 113 4\n"
        status = machined.machinectl("status", "pn").stdout
        assert "Address: 203.0.113.4" in status and "OS: Busybox Test 9" in status
        assert machined.machinectl("terminate", "pn").returncode == 0
        nspawn.communicate(timeout=30)
    finally:
        if nspawn.poll() is None:
            nspawn.kill()
            nspawn.wait()
