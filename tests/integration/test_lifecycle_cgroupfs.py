"""Machines live and die without systemd: the cgroupfs backend, pidfd leaders, GC, reconcile."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from dbus_fast import Message, MessageType, Variant

from harness.client import add_match, connect, manager_call
from harness.markers import needs_nspawn
from harness.rootfs import busybox_root
from harness.system import STATE_DIR, System, cgroup_root, wait_for

MACHINE = "/org/freedesktop/machine1/machine"


def signals_seen(marker_dir: Path) -> list[str]:
    try:
        return (marker_dir / "signals").read_text().split()
    except FileNotFoundError:
        return []


def create(s: System, name: str, pid: int, cls: str = "container", *props: str) -> str:
    result = s.manager_call("CreateMachine", "sayssusa(sv)", name, 0, "", cls, pid, "", len(props) // 3, *props)
    assert result.returncode == 0, result.output + s.log_text()
    return result.stdout


def test_create_machine_makes_a_scope(machined: System, tmp_path: Path) -> None:
    leader = machined.spawn_process(["sleep", "infinity"])
    out = create(machined, "web", leader.pid)
    assert out == 'o "/org/freedesktop/machine1/machine/web"\n'
    scope = cgroup_root() / "machine.slice/machine-web.scope"
    assert (scope / "cgroup.procs").read_text().split() == [str(leader.pid)]
    assert (STATE_DIR / "web").read_text().splitlines()[2] == "SCOPE=machine-web.scope"
    assert os.readlink(STATE_DIR / "unit:machine-web.scope") == "web"
    show = machined.machinectl("show", "web", "-p", "Unit", "-p", "State", "-p", "Leader")
    assert sorted(show.stdout.split()) == sorted(["Unit=machine-web.scope", "State=running", f"Leader={leader.pid}"])
    ps = machined.run("ps", "-o", "machine=", "-p", str(leader.pid))
    assert ps.stdout.strip() == "web"
    # the scope name escapes "-" as systemd does
    other = machined.spawn_process(["sleep", "infinity"])
    create(machined, "my-ct", other.pid)
    assert (cgroup_root() / "machine.slice/machine-my\\x2dct.scope").is_dir()
    assert (
        machined.busctl(
            "get-property", "org.freedesktop.machine1", f"{MACHINE}/my_2dct", "org.freedesktop.machine1.Machine", "Unit"
        ).stdout
        == 's "machine-my\\\\x2dct.scope"\n'
    )


def test_create_with_network_and_scope_properties(machined: System) -> None:
    leader = machined.spawn_process(["sleep", "infinity"])
    result = machined.manager_call(
        "CreateMachineWithNetwork",
        "sayssusaia(sv)",
        "net1",
        0,
        "svc",
        "vm",
        leader.pid,
        "",
        2,
        4,
        9,
        3,
        "Slice",
        "s",
        "machine-tenant.slice",
        "Description",
        "s",
        "my vm",
        "TasksMax",
        "t",
        100,
    )
    assert result.returncode == 0, result.output
    assert (
        cgroup_root() / "machine.slice/machine-tenant.slice/machine-net1.scope/cgroup.procs"
    ).read_text().split() == [str(leader.pid)]
    assert (
        machined.busctl(
            "get-property",
            "org.freedesktop.machine1",
            f"{MACHINE}/net1",
            "org.freedesktop.machine1.Machine",
            "NetworkInterfaces",
        ).stdout
        == "ai 2 4 9\n"
    )
    assert (
        "TasksMax=100 not applied" in machined.log_text()
        or (cgroup_root() / "machine.slice/machine-tenant.slice/machine-net1.scope/pids.max").read_text().strip()
        == "100"
    )


def test_create_errors(machined: System) -> None:
    leader = machined.spawn_process(["sleep", "infinity"])
    unknown = machined.manager_call(
        "CreateMachine", "sayssusa(sv)", "bad", 0, "", "container", leader.pid, "", 1, "Frobnicate", "b", "true"
    )
    assert unknown.returncode == 1
    assert unknown.stderr == "Call failed: Cannot set property Frobnicate, or unknown property.\n"
    assert not (cgroup_root() / "machine.slice/machine-bad.scope").exists()
    assert machined.manager_call("GetMachine", "s", "bad").returncode == 1
    wrong_type = machined.manager_call(
        "CreateMachine", "sayssusa(sv)", "bad", 0, "", "container", leader.pid, "", 1, "Slice", "u", "5"
    )
    assert "Invalid type for property Slice" in wrong_type.stderr
    empty_class = machined.manager_call("CreateMachine", "sayssusa(sv)", "bad", 0, "", "", leader.pid, "", 0)
    assert empty_class.stderr == "Call failed: Operation not supported\n"
    create(machined, "ok", leader.pid)
    dup_leader = machined.manager_call("CreateMachine", "sayssusa(sv)", "ok2", 0, "", "container", leader.pid, "", 0)
    assert dup_leader.stderr == "Call failed: File exists\n"
    dup_name = machined.manager_call("CreateMachine", "sayssusa(sv)", "ok", 0, "", "container", leader.pid, "", 0)
    assert dup_name.stderr == "Call failed: Machine 'ok' already exists\n"


def test_terminate_sends_sigterm_and_collects(machined: System, tmp_path: Path) -> None:
    leader = machined.trapping_leader(tmp_path)
    create(machined, "term", leader.pid)
    scope = cgroup_root() / "machine.slice/machine-term.scope"
    result = machined.machinectl("terminate", "term")
    assert result.returncode == 0, result.output
    wait_for(lambda: machined.manager_call("GetMachine", "s", "term").returncode == 1, "term to be collected")
    assert signals_seen(tmp_path) == ["TERM"]
    assert not (STATE_DIR / "term").exists()
    assert not os.path.lexists(STATE_DIR / "unit:machine-term.scope")
    wait_for(lambda: not scope.exists(), "the scope cgroup to be removed")


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    from harness.system import PYMACHINED, system

    with system(PYMACHINED, tmp_path, start=False) as s:
        s.daemon_args = ["--stop-timeout", "0.5"]
        s.start_daemon()
        leader = s.trapping_leader(tmp_path, ignore_term=True)
        create(s, "stubborn", leader.pid)
        assert s.machinectl("terminate", "stubborn").returncode == 0
        assert s.machinectl("show", "-p", "State", "--value", "stubborn").stdout == "closing\n"
        wait_for(lambda: s.manager_call("GetMachine", "s", "stubborn").returncode == 1, "SIGKILL after the timeout")
        assert "TERM" in signals_seen(tmp_path)
        assert leader.process is not None and leader.process.wait(timeout=5) == -signal.SIGKILL


def test_terminate_registered_machine_kills_only_its_unit(machined: System) -> None:
    inside = machined.spawn_leader("machine-reg.scope")
    sibling = machined.spawn_leader("machine-reg.scope")
    outside = machined.spawn_leader("machine-other.scope")
    machined.register("reg", inside)
    assert machined.manager_call("TerminateMachine", "s", "reg").returncode == 0
    for leader in (inside, sibling):
        assert leader.process is not None
        assert leader.process.wait(timeout=10) == -signal.SIGTERM
    assert outside.process is not None and outside.process.poll() is None
    wait_for(lambda: machined.manager_call("GetMachine", "s", "reg").returncode == 1, "reg to be collected")
    # a registered machine's cgroup belongs to its registrant: it stays
    assert inside.cgroup.is_dir()


def test_kill_leader_and_all(machined: System, tmp_path: Path) -> None:
    leader = machined.trapping_leader(tmp_path)
    create(machined, "k", leader.pid)
    helper = subprocess.Popen(["sleep", "infinity"])
    (cgroup_root() / "machine.slice/machine-k.scope/cgroup.procs").write_text(str(helper.pid))
    assert machined.machinectl("kill", "--kill-whom=leader", "--signal=SIGUSR1", "k").returncode == 0
    wait_for(lambda: signals_seen(tmp_path) == ["USR1"], "USR1 at the leader")
    assert helper.poll() is None
    assert machined.machinectl("kill", "--kill-whom=all", "--signal=SIGUSR2", "k").returncode == 0
    wait_for(lambda: helper.poll() is not None, "USR2 at every process")
    assert helper.returncode == -signal.SIGUSR2
    wait_for(lambda: signals_seen(tmp_path) == ["USR1", "USR2"], "USR2 at the leader")
    assert machined.machinectl("reboot", "k").returncode == 0
    wait_for(lambda: signals_seen(tmp_path)[-1:] == ["INT"], "SIGINT for reboot")
    assert machined.machinectl("poweroff", "k").returncode == 0
    wait_for(lambda: signals_seen(tmp_path)[-1:] == ["RTMIN+4"], "SIGRTMIN+4 for poweroff")


def test_kill_and_terminate_errors(machined: System) -> None:
    leader = machined.spawn_process(["sleep", "infinity"])
    create(machined, "e", leader.pid)
    cases = {
        ("e", "nobody", 15): "Call failed: Invalid kill parameter 'nobody'\n",
        ("e", "all", 0): "Call failed: Invalid signal 0\n",
        ("e", "all", 65): "Call failed: Invalid signal 65\n",
        ("e", "leader", -1): "Call failed: Invalid signal -1\n",
        ("nosuch", "all", 15): "Call failed: No machine 'nosuch' known\n",
        (".host", "all", 15): "Call failed: Operation not supported\n",
    }
    for (name, who, sig), expected in cases.items():
        result = machined.busctl(
            "call",
            "--",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "KillMachine",
            "ssi",
            name,
            who,
            str(sig),
        )
        assert result.stderr == expected
    assert machined.manager_call("TerminateMachine", "s", ".host").stderr == "Call failed: Operation not supported\n"
    assert machined.manager_call("TerminateMachine", "s", "nosuch").stderr == "Call failed: No machine 'nosuch' known\n"


async def watch_removal(trigger, timeout: float = 5.0) -> tuple[list[str], float]:  # type: ignore[no-untyped-def]
    bus = await connect()
    seen: list[str] = []
    arrived = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.message_type is MessageType.SIGNAL and msg.member == "MachineRemoved":
            seen.append(msg.body[0])
            arrived.set()

    bus.add_message_handler(on_message)
    await add_match(bus, "type='signal',interface='org.freedesktop.machine1.Manager',member='MachineRemoved'")
    start = time.monotonic()
    trigger()
    await asyncio.wait_for(arrived.wait(), timeout)
    elapsed = time.monotonic() - start
    bus.disconnect()
    return seen, elapsed


def test_leader_exit_removes_the_machine_at_once(machined: System) -> None:
    created = machined.spawn_process(["sleep", "infinity"])
    create(machined, "dies", created.pid)
    registered = machined.spawn_leader("machine-regdies.scope")
    machined.register("regdies", registered)
    for name, leader in (("dies", created), ("regdies", registered)):
        seen, elapsed = asyncio.run(watch_removal(leader.kill))
        assert seen == [name]
        assert elapsed < 2.0  # a pidfd wakes the loop; no polling interval is involved
        assert not (STATE_DIR / name).exists()
    assert not (cgroup_root() / "machine.slice/machine-dies.scope").exists()
    # the registrant's cgroup is not touched
    assert registered.cgroup.is_dir()


def test_leader_leaving_its_scope_ends_the_machine(machined: System) -> None:
    # systemd stops a scope whose cgroup empties, and machined collects its machine; the cgroupfs
    # backend sees cgroup.events say "populated 0"
    leader = machined.spawn_leader("machine-leaves.scope")
    machined.register("leaves", leader)
    elsewhere = machined.make_cgroup("machine.slice/elsewhere.scope")
    (elsewhere / "cgroup.procs").write_text(str(leader.pid))
    wait_for(lambda: machined.manager_call("GetMachine", "s", "leaves").returncode == 1, "leaves to go")
    assert leader.process is not None and leader.process.poll() is None  # only the machine ended
    assert not (STATE_DIR / "leaves").exists()


def test_busctl_monitor_sees_machine_removed(machined: System) -> None:
    leader = machined.spawn_leader("machine-mon.scope")
    machined.register("mon", leader)
    monitor = subprocess.Popen(
        ["busctl", "monitor", "--match", "type='signal',member='MachineRemoved'", "org.freedesktop.machine1"],
        env=machined.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        leader.kill()
        wait_for(lambda: machined.manager_call("GetMachine", "s", "mon").returncode == 1, "mon to go")
        time.sleep(0.3)
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=5)
    assert "Member=MachineRemoved" in out
    assert 'STRING "mon";' in out


def test_idempotent_reregistration(machined: System) -> None:
    leader = machined.spawn_leader("machine-idem.scope")
    first = machined.register("idem", leader)
    again = machined.register("idem", leader)
    assert again.returncode == 0 and again.stdout == first.stdout
    other = machined.spawn_leader("machine-idem2.scope")
    different = machined.register("idem", other)
    assert different.stderr == "Call failed: Machine 'idem' already exists\n"


def test_reconcile_on_start(machined: System) -> None:
    alive = machined.spawn_leader("machine-alive.scope")
    doomed = machined.spawn_leader("machine-doomed.scope")
    moved = machined.spawn_leader("machine-moved.scope")
    for name, leader in (("alive", alive), ("doomed", doomed), ("moved", moved)):
        assert machined.register(name, leader).returncode == 0
    machined.stop_daemon()
    doomed.kill()
    # "moved" stands for a reused PID: the process now lives in another unit
    other = machined.make_cgroup("system.slice/other.service")
    (other / "cgroup.procs").write_text(str(moved.pid))
    # a 257-style state file (quoted values, newer keys) loads too
    extra = machined.spawn_leader("machine-newer.scope")
    (STATE_DIR / "newer").write_text(
        f'# This is private data. Do not parse.\nNAME=newer\nSCOPE="machine-newer.scope"\nSERVICE="my svc"\n'
        f"UID=0\nLEADER={extra.pid}\nLEADER_PIDFDID=0\nCLASS=container\nREALTIME=1795606247938593\n"
        f'MONOTONIC=1131394912\nNETIF="3 7"\n'
    )
    machined.start_daemon()
    listed = machined.machinectl("list", "--no-legend").stdout.split()
    assert "alive" in listed and "newer" in listed
    assert "doomed" not in listed and "moved" not in listed
    assert not (STATE_DIR / "doomed").exists() and not (STATE_DIR / "moved").exists()
    assert (
        machined.busctl(
            "get-property",
            "org.freedesktop.machine1",
            f"{MACHINE}/newer",
            "org.freedesktop.machine1.Machine",
            "Service",
        ).stdout
        == 's "my svc"\n'
    )
    log = machined.log_text()
    assert "Dropping machine doomed" in log and "Dropping machine moved" in log


async def register_ex(
    properties: list[list[object]], fds: list[int] | None = None, member: str = "RegisterMachineEx"
) -> Message:
    bus = await connect(unix_fds=True)
    body: list[object] = ["exm", properties]
    signature = "sa(sv)"
    if member == "CreateMachineEx":
        body.append([])
        signature = "sa(sv)a(sv)"
    reply = await bus.call(manager_call(member, signature, body, fds or []))
    bus.disconnect()
    assert reply is not None
    return reply


def test_register_machine_ex_with_pidfd(machined: System) -> None:
    leader = machined.spawn_leader("machine-exm.scope")
    pidfd = os.pidfd_open(leader.pid)
    reply = asyncio.run(
        register_ex(
            [
                ["Class", Variant("s", "vm")],
                ["LeaderPIDFD", Variant("h", 0)],
                ["Service", Variant("s", "qemu")],
                ["VSockCID", Variant("u", 42)],
                ["SSHAddress", Variant("s", "vsock/42")],
                ["SSHPrivateKeyPath", Variant("s", "/run/key")],
                ["NetworkInterfaces", Variant("ai", [5])],
            ],
            [pidfd],
        )
    )
    os.close(pidfd)
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    assert reply.body == ["/org/freedesktop/machine1/machine/exm"]

    def prop(name: str) -> str:
        return machined.busctl(
            "get-property", "org.freedesktop.machine1", f"{MACHINE}/exm", "org.freedesktop.machine1.Machine", name
        ).stdout.strip()

    assert prop("Leader") == f"u {leader.pid}"
    assert prop("LeaderPIDFDId") == f"t {os.stat(f'/proc/{leader.pid}').st_ino}" or prop("LeaderPIDFDId") != "t 0"
    assert prop("VSockCID") == "u 42"
    assert prop("SSHAddress") == 's "vsock/42"'
    assert prop("UID") == "u 0"
    assert prop("Supervisor").startswith("u ") and prop("Supervisor") != f"u {leader.pid}"
    ssh = machined.manager_call("GetMachineSSHInfo", "s", "exm")
    assert ssh.stdout == 'ss "vsock/42" "/run/key"\n'
    # newer properties stay out of GetAll, so 252's machinectl show is unchanged
    show = machined.machinectl("show", "exm").stdout
    assert "VSockCID" not in show and "Supervisor" not in show


def test_register_machine_ex_errors(machined: System) -> None:
    leader = machined.spawn_leader("machine-exe.scope")
    cases = [
        ([["Bogus", Variant("s", "x")]], "org.freedesktop.DBus.Error.InvalidArgs", "Unknown property 'Bogus'"),
        (
            [["LeaderPID", Variant("u", leader.pid)]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Both LeaderPID and LeaderPIDFDID must be specified to identify the leader process by PIDFDID",
        ),
        ([["Id", Variant("ay", b"abc")]], "org.freedesktop.DBus.Error.InvalidArgs", "Invalid machine ID parameter"),
        (
            [["Class", Variant("s", "host")]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Invalid machine class parameter",
        ),
        (
            [["VSockCID", Variant("u", 1)]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "JSON field 'vSockCid' is not a regular VSOCK CID.",
        ),
        (
            [["NetworkInterfaces", Variant("ai", [0])]],
            "org.freedesktop.DBus.Error.InvalidArgs",
            "Invalid network interface index 0",
        ),
        ([["Service", Variant("u", 5)]], "System.Error.ENXIO", "No such device or address"),
    ]
    for properties, name, text in cases:
        reply = asyncio.run(register_ex(properties))
        assert (reply.error_name, reply.body) == (name, [text])
    other = machined.spawn_leader("machine-exe2.scope")
    pidfd = os.pidfd_open(other.pid)
    mismatch = asyncio.run(
        register_ex(
            [
                ["LeaderPIDFD", Variant("h", 0)],
                ["LeaderPID", Variant("u", leader.pid)],
                ["Class", Variant("s", "container")],
            ],
            [pidfd],
        )
    )
    os.close(pidfd)
    assert mismatch.body == ["LeaderPID and LeaderPIDFD refer to different processes"]


def test_create_machine_ex(machined: System) -> None:
    leader = machined.spawn_process(["sleep", "infinity"])
    pidfd = os.pidfd_open(leader.pid)
    reply = asyncio.run(
        register_ex(
            [["Class", Variant("s", "container")], ["LeaderPIDFD", Variant("h", 0)]], [pidfd], member="CreateMachineEx"
        )
    )
    os.close(pidfd)
    assert reply.body == ["/org/freedesktop/machine1/machine/exm"], reply.body
    assert (cgroup_root() / "machine.slice/machine-exm.scope/cgroup.procs").read_text().split() == [str(leader.pid)]


@needs_nspawn
def test_nspawn_creates_its_scope_and_is_terminated(machined: System) -> None:
    root = busybox_root(machined.workdir / "root")
    nspawn = subprocess.Popen(
        [
            "systemd-nspawn",
            "--quiet",
            "--register=yes",
            "-D",
            str(root),
            "-M",
            "ctr",
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
        try:
            wait_for(lambda: (STATE_DIR / "ctr").exists(), "nspawn to create ctr", process=nspawn)
        except RuntimeError:
            raise AssertionError(nspawn.communicate()[0].decode() + machined.log_text()) from None
        # the container's PID 1 ignores SIGTERM until its trap is set
        try:
            wait_for(lambda: (root / "ready").exists(), "the payload to set its trap", process=nspawn, timeout=5)
        except TimeoutError:
            nspawn.kill()
            raise AssertionError(nspawn.communicate()[0].decode() + machined.log_text()) from None
        listing = machined.machinectl("list", "--no-legend").stdout.split()
        assert listing[:5] == ["ctr", "container", "systemd-nspawn", "busyboxtest", "1"]
        unit = machined.machinectl("show", "-p", "Unit", "--value", "ctr").stdout.strip()
        assert unit == "machine-ctr.scope"
        leader = int(machined.machinectl("show", "-p", "Leader", "--value", "ctr").stdout)
        assert (cgroup_root() / "machine.slice/machine-ctr.scope").is_dir()
        assert str(leader) in " ".join(
            (cgroup_root() / "machine.slice/machine-ctr.scope" / sub / "cgroup.procs").read_text()
            for sub in ("", "payload")
            if (cgroup_root() / "machine.slice/machine-ctr.scope" / sub).is_dir()
        )
        assert machined.machinectl("terminate", "ctr").returncode == 0
        out, _ = nspawn.communicate(timeout=30)
        wait_for(lambda: machined.manager_call("GetMachine", "s", "ctr").returncode == 1, "ctr to be collected")
    finally:
        if nspawn.poll() is None:
            nspawn.kill()
            nspawn.wait()
