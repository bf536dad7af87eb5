"""io.systemd.Machine, io.systemd.MachineImage and io.systemd.service on /run/systemd/machine.

The python `varlink` package (its own IDL parser and client) is the independent client for every
method, errors included; calls that pass file descriptors use the raw client, which reads SCM_RIGHTS.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import varlink

from harness.rootfs import busybox_root
from harness.system import System, wait_for
from harness.varlink_raw import raw_call, raw_call_as, raw_exchange

MACHINE = "/run/systemd/machine/io.systemd.Machine"
IMAGE = "/run/systemd/machine/io.systemd.MachineImage"
IDL_DIR = Path(__file__).parents[2] / "src/pymachined/varlink/idl"


def vcall(interface: str, method: str, socket: str = MACHINE, more: bool = False, /, **parameters: Any) -> Any:
    """One call through the varlink package: the reply, or all replies with more."""
    with varlink.Client(address=f"unix:{socket}") as client, client.open(interface) as connection:
        if more:
            return list(getattr(connection, method)(_more=True, **parameters))
        return getattr(connection, method)(**parameters)


def verror(interface: str, method: str, socket: str = MACHINE, more: bool = False, /, **parameters: Any) -> tuple:
    """The (error name, parameters) a call fails with."""
    with pytest.raises(varlink.VarlinkError) as raised:
        vcall(interface, method, socket, more, **parameters)
    return raised.value.error(), raised.value.parameters()


def machine(method: str, more: bool = False, **parameters: Any) -> Any:
    return vcall("io.systemd.Machine", method, MACHINE, more, **parameters)


def machine_error(method: str, more: bool = False, **parameters: Any) -> tuple:
    return verror("io.systemd.Machine", method, MACHINE, more, **parameters)


def invalid(parameter: str) -> tuple:
    return ("org.varlink.service.InvalidParameter", {"parameter": parameter})


NO_SUCH_MACHINE = ("io.systemd.Machine.NoSuchMachine", {})


@pytest.fixture
def foo(machined: System) -> int:
    leader = machined.spawn_leader("machine-foo.scope")
    assert machined.register("foo", leader.pid).returncode == 0
    return leader.pid


# introspection


def test_info_and_interfaces(machined: System) -> None:
    with varlink.Client(address=f"unix:{MACHINE}") as client:
        assert client.get_interfaces() == [
            "io.systemd",
            "io.systemd.Machine",
            "io.systemd.MachineImage",
            "io.systemd.service",
            "org.varlink.service",
        ]
        assert client.info["product"] == "pymachined (systemd-machined)"
    for socket in (MACHINE, IMAGE):  # one server on both sockets
        for name in ("io.systemd.Machine", "io.systemd.MachineImage", "io.systemd.service"):
            description = vcall("org.varlink.service", "GetInterfaceDescription", socket, interface=name)
            assert description["description"] == (IDL_DIR / f"{name}.varlink").read_text()
    assert stat.S_IMODE(os.stat(MACHINE).st_mode) == 0o666
    assert verror("org.varlink.service", "GetInterfaceDescription", interface="io.nope") == (
        "org.varlink.service.InterfaceNotFound",
        {"interface": "io.nope"},
    )


# List


def test_list(machined: System, foo: int) -> None:
    replies = machine("List", more=True)
    assert [r["name"] for r in replies] == [".host", "foo"]
    host, mine = replies
    assert host["class"] == "host" and host["leader"]["pid"] == 1 and host["vSockCid"] == 1
    assert mine["class"] == "container" and mine["unit"] == "machine-foo.scope"
    assert mine["leader"]["pid"] == foo and mine["leader"]["pidfdId"] > 0
    assert mine["leader"]["bootId"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    assert set(mine) == {"name", "class", "unit", "leader", "timestamp"}  # empty fields left out
    assert machine("List", name="foo") == mine
    assert machine("List", pid={"pid": foo}) == mine
    assert machine("List", name="foo", pid={"pid": foo}) == mine
    assert machine("List", name="foo", pid={"pid": foo, "pidfdId": 1}) == mine  # a stale pidfd id is ignored
    assert machine_error("List", name=".host", pid={"pid": foo}) == NO_SUCH_MACHINE
    assert machine_error("List", pid={"pid": 0}) == NO_SUCH_MACHINE  # the test runs in no machine
    assert machine_error("List", name="nosuch") == NO_SUCH_MACHINE
    assert machine_error("List") == ("org.varlink.service.ExpectedMore", {})
    assert machine_error("List", name="../x") == invalid("name")
    assert machine_error("List", name="") == invalid("name")
    assert machine_error("List", pid={"pid": -1}) == invalid("pid")
    assert machine_error("List", name="foo", acquireMetadata="maybe") == invalid("acquireMetadata")
    assert raw_call(MACHINE, {"method": "io.systemd.Machine.List", "parameters": {"pid": 5}}) == (
        '{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"pid"}}'
    )
    assert raw_call(MACHINE, {"method": "io.systemd.Machine.List", "parameters": {"name": None}}) == (
        '{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"name"}}'
    )
    assert raw_call(MACHINE, {"method": "io.systemd.Machine.List", "parameters": {"name": "foo", "x": 1}}) == (
        '{"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":"x"}}'
    )


def test_list_metadata(machined: System, foo: int) -> None:
    root = busybox_root(machined.workdir / "root", os_id="vltest")
    leader = machined.container_leader("machine-ctr.scope", root)
    machined.register("ctr", leader.pid)
    userns = machined.userns_leader("machine-userns.scope", "0 100000 65536")
    machined.register("userns", userns.pid)
    # foo shares the host's network: yes fails, graceful leaves the addresses out
    assert machine_error("List", name="foo", acquireMetadata="yes") == ("io.systemd.Machine.NoPrivateNetworking", {})
    graceful = machine("List", name="foo", acquireMetadata="graceful")
    assert "addresses" not in graceful and graceful["UIDShift"] == 0 and graceful["OSRelease"]
    ctr = machine("List", name="ctr", acquireMetadata="graceful")
    assert "ID=vltest" in ctr["OSRelease"]
    assert machine("List", name="userns", acquireMetadata="graceful")["UIDShift"] == 100000
    host = machine("List", name=".host", acquireMetadata="yes")
    assert (
        host["UIDShift"] == 0 and host["addresses"] and all(set(a) >= {"family", "address"} for a in host["addresses"])
    )
    # a failing machine ends the stream after what was ready
    streamed = raw_exchange(
        MACHINE, {"method": "io.systemd.Machine.List", "parameters": {"acquireMetadata": "yes"}, "more": True}
    )
    assert streamed.json()[-1] == {"error": "io.systemd.Machine.NoPrivateNetworking", "parameters": {}}
    assert streamed.json()[0]["parameters"]["name"] == ".host" and streamed.json()[0]["continues"] is True


# Register, Unregister


def test_register_and_unregister(machined: System) -> None:
    leader = machined.spawn_leader("machine-bar.scope")
    assert machine("Register", name="bar", **{"class": "container"}, leader=leader.pid) == {}
    listed = machine("List", name="bar")
    assert listed["unit"] == "machine-bar.scope" and listed["leader"]["pid"] == leader.pid
    assert Path("/run/systemd/machines/bar").exists()
    assert "bar" in machined.manager_call("ListMachines").stdout  # the D-Bus view agrees
    assert machine_error("Register", name="bar", **{"class": "container"}, leader=leader.pid) == (
        "io.systemd.Machine.MachineExists",
        {},
    )
    other = machined.spawn_leader("machine-baz.scope")
    assert (
        machine(
            "Register",
            name="baz",
            id="0123456789abcdef0123456789abcdef",
            service="test",
            **{"class": "vm"},
            leaderProcessId={"pid": other.pid},
            rootDirectory="/",
            sshAddress="10.0.0.1:22",
            sshPrivateKeyPath="/etc/key",
            vSockCid=42,
        )
        == {}
    )
    baz = machine("List", name="baz")
    assert baz["id"] == "0123456789abcdef0123456789abcdef" and baz["service"] == "test" and baz["class"] == "vm"
    assert (baz["sshAddress"], baz["sshPrivateKeyPath"], baz["vSockCid"], baz["rootDirectory"]) == (
        "10.0.0.1:22",
        "/etc/key",
        42,
        "/",
    )
    assert machine("Unregister", name="bar") == {}
    assert machine_error("List", name="bar") == NO_SUCH_MACHINE
    assert os.path.exists(f"/proc/{leader.pid}")  # forgotten, not killed
    assert not Path("/run/systemd/machines/bar").exists()
    assert machine("Unregister", pid={"pid": other.pid}) == {}
    assert machine("Unregister", name=".host") == {}  # as machined: a no-op
    assert machine("List", name=".host")["class"] == "host"


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"name": "q", "class": "container", "leader": 1}, invalid("leader")),
        ({"name": "q", "class": "container", "leader": 0}, invalid("leader")),
        ({"name": "q", "class": "container", "leader": 4194304}, invalid("leader")),
        ({"name": "q", "class": "bogus"}, invalid("class")),
        ({"name": "q", "class": "host"}, invalid("class")),
        ({"name": "q", "class": "container", "id": "xyz"}, invalid("id")),
        ({"name": "../x", "class": "container"}, invalid("name")),
        ({"name": ".host", "class": "container"}, invalid("name")),
        ({"name": "q"}, invalid("class")),
        ({"class": "container"}, invalid("name")),
        ({"name": "q", "class": "container", "rootDirectory": "rel/dir"}, invalid("rootDirectory")),
        ({"name": "q", "class": "container", "ifIndices": [-1]}, invalid("ifIndices")),
        ({"name": "q", "class": "container", "vSockCid": 1}, invalid("vSockCid")),
        ({"name": "q", "class": "container", "leaderProcessId": {"pid": -3}}, invalid("leaderProcessId")),
    ],
)
def test_register_refuses(machined: System, parameters: dict, expected: tuple) -> None:
    assert verror("io.systemd.Machine", "Register", **parameters) == expected


def test_register_errno_failures(machined: System, foo: int) -> None:
    # the caller itself as leader, but it sits in no unit: ENXIO, as machined's unit lookup
    assert machine_error("Register", name="noleader", **{"class": "container"}) == ("io.systemd.System", {"errno": 6})
    # a process that already leads a machine: EEXIST
    assert machine_error("Register", name="again", **{"class": "container"}, leader=foo) == (
        "io.systemd.System",
        {"errno": 17},
    )
    assert machine_error("Register", name="q", **{"class": "container"}, leader=foo, leaderProcessId={"pid": 2}) == (
        invalid("leaderProcessId")
    )


# Terminate, Kill (cgroupfs backend: pymachined stops the scope itself)


def test_terminate_and_kill(machined: System, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    leader = machined.trapping_leader(markers)
    scope = machined.make_cgroup("machine.slice/machine-t.scope")
    (scope / "cgroup.procs").write_text(str(leader.pid))
    machine("Register", name="t", **{"class": "container"}, leader=leader.pid)
    assert machine_error("Kill", name="t", signal=0) == invalid("signal")
    assert machine_error("Kill", name="t", signal=65) == invalid("signal")
    assert machine_error("Kill", name="nosuch", signal=10) == NO_SUCH_MACHINE
    assert machine_error("Kill", name="t", whom="everyone", signal=10) == invalid("whom")
    assert machine_error("Kill", name="t") == invalid("signal")
    assert machine("Kill", name="t", whom="leader", signal=10) == {}
    signals = markers / "signals"
    wait_for(lambda: signals.exists() and "USR1" in signals.read_text(), "SIGUSR1 at the leader")
    assert machine("Kill", name="t", signal=12) == {}  # whom defaults to all
    wait_for(lambda: "USR2" in signals.read_text(), "SIGUSR2 at the scope")
    assert machine_error("Kill", name=".host", signal=10) == ("io.systemd.System", {"errno": 95})
    assert machine_error("Terminate", name=".host") == ("io.systemd.System", {"errno": 95})
    assert machine_error("Terminate", name="nosuch") == NO_SUCH_MACHINE
    assert machine_error("Terminate") == NO_SUCH_MACHINE
    assert machine("Terminate", name="t") == {}
    wait_for(lambda: leader.process is not None and leader.process.poll() is not None, "the leader to end")
    wait_for(lambda: not Path("/run/systemd/machines/t").exists(), "machine t to go")


# Open, OpenRootDirectory (fds through the raw client)


def test_open_tty_and_root_directory(machined: System, foo: int) -> None:
    root = busybox_root(machined.workdir / "root")
    leader = machined.container_leader("machine-ctr.scope", root)
    machined.register("ctr", leader.pid)
    reply = raw_exchange(MACHINE, {"method": "io.systemd.Machine.Open", "parameters": {"name": "ctr", "mode": "tty"}})
    try:
        (message,) = reply.json()
        assert message["parameters"]["ptyFileDescriptor"] == 0
        assert message["parameters"]["ptyPath"].startswith("/dev/pts/")
        assert len(reply.fds) == 1 and os.readlink(f"/proc/self/fd/{reply.fds[0]}").endswith("ptmx")
    finally:
        reply.close_fds()
    reply = raw_exchange(MACHINE, {"method": "io.systemd.Machine.OpenRootDirectory", "parameters": {"name": "ctr"}})
    try:
        assert reply.json() == [{"parameters": {"fileDescriptor": 0}}]
        assert (Path(f"/proc/self/fd/{reply.fds[0]}") / "etc/os-release").exists()
        assert os.stat(f"/proc/self/fd/{reply.fds[0]}").st_ino == os.stat(root).st_ino
    finally:
        reply.close_fds()
    # the varlink package reads no SCM_RIGHTS (the kernel drops the fd), but sees the same replies
    assert machine("OpenRootDirectory", name="ctr") == {"fileDescriptor": 0}
    opened = machine("Open", name="ctr", mode="tty")
    assert opened["ptyFileDescriptor"] == 0 and opened["ptyPath"].startswith("/dev/pts/")
    assert machine_error("Open", name="ctr", mode="bogus") == invalid("mode")
    assert machine_error("Open", name="ctr") == invalid("mode")
    assert machine_error("Open", name="nosuch", mode="tty") == NO_SUCH_MACHINE
    # login and shell need the machine's own systemd on its bus: this container has no bus socket
    assert machine_error("Open", name="ctr", mode="login") == ("io.systemd.Machine.NoIPC", {})
    assert machine_error("Open", name="ctr", mode="shell", user="root", path="/bin/sh") == (
        "io.systemd.Machine.NoIPC",
        {},
    )


# MapFrom, MapTo


def test_map_from_and_to(machined: System, foo: int) -> None:
    userns = machined.userns_leader("machine-userns.scope", "0 100000 65536")
    machined.register("userns", userns.pid)
    vm = machined.spawn_leader("machine-vm.scope")
    machined.register("vm", vm.pid, machine_class="vm")
    assert machine("MapFrom", name="userns", uid=0, gid=5) == {"uid": 100000, "gid": 100005}
    assert machine("MapFrom", name="userns") == {}
    assert machine("MapFrom", name="foo", uid=1000) == {"uid": 1000}
    assert machine_error("MapFrom", name="userns", uid=70000) == ("io.systemd.Machine.NoSuchUser", {})
    assert machine_error("MapFrom", name="userns", gid=70000) == ("io.systemd.Machine.NoSuchGroup", {})
    assert machine_error("MapFrom", name="userns", uid=65535) == invalid("uid")
    assert machine_error("MapFrom", name="vm", uid=0) == ("io.systemd.Machine.NotSupported", {})
    assert machine("MapTo", uid=100000, gid=100007) == {"uid": 0, "gid": 7, "machineName": "userns"}
    assert machine_error("MapTo", uid=1000) == ("io.systemd.Machine.UserInHostRange", {})
    assert machine_error("MapTo", gid=1000) == ("io.systemd.Machine.GroupInHostRange", {})
    assert machine_error("MapTo", uid=900000) == ("io.systemd.Machine.NoSuchUser", {})
    assert machine_error("MapTo", gid=900000) == ("io.systemd.Machine.NoSuchGroup", {})
    assert machine_error("MapTo") == NO_SUCH_MACHINE


# BindMount, CopyFrom, CopyTo


def test_copy_and_bind(machined: System, tmp_path: Path) -> None:
    root = busybox_root(machined.workdir / "root")
    leader = machined.container_leader("machine-ctr.scope", root)
    machined.register("ctr", leader.pid)
    vm = machined.spawn_leader("machine-vm.scope")
    machined.register("vm", vm.pid, machine_class="vm")
    source = tmp_path / "hello.txt"
    source.write_text("hello from the host\n")
    assert machine("CopyTo", name="ctr", source=str(source), destination="/hello.txt") == {}
    assert (root / "hello.txt").read_text() == "hello from the host\n"
    assert machine("CopyFrom", name="ctr", source="/hello.txt", destination=str(tmp_path / "back.txt")) == {}
    assert (tmp_path / "back.txt").read_text() == "hello from the host\n"
    error = machine_error("CopyTo", name="ctr", source=str(source), destination="/hello.txt")
    assert error == ("io.systemd.System", {"errno": 17})
    assert machine("CopyTo", name="ctr", source=str(source), destination="/hello.txt", replace=True) == {}
    assert machine_error("CopyTo", name="ctr", source="relative", destination="/x") == invalid("source")
    assert machine_error("CopyFrom", name="ctr", source="/x", destination="rel") == invalid("destination")
    assert machine_error("CopyFrom", name="vm", source="/x") == ("io.systemd.Machine.NotSupported", {})
    assert machine_error("CopyFrom", name="ctr") == invalid("source")
    assert machine_error("BindMount", name="vm", source="/tmp") == ("io.systemd.Machine.NotSupported", {})
    assert machine_error("BindMount", name="ctr", source="tmp") == invalid("source")
    assert machine_error("BindMount", name="nosuch", source="/tmp") == NO_SUCH_MACHINE


# unprivileged peers


def nobody_call(socket: str, method: str, parameters: dict[str, Any]) -> str:
    """A raw call made by uid 65534."""
    return raw_call_as(socket, {"method": method, "parameters": parameters})


def test_unprivileged_peer(machined: System, foo: int) -> None:
    denied = '{"error":"org.varlink.service.PermissionDenied","parameters":{}}'
    assert nobody_call(MACHINE, "io.systemd.Machine.List", {"name": "foo"}).startswith('{"parameters":{"name":"foo"')
    for method, parameters in (
        ("io.systemd.Machine.Terminate", {"name": "foo"}),
        ("io.systemd.Machine.Kill", {"name": "foo", "signal": 18}),
        ("io.systemd.Machine.Unregister", {"name": "foo"}),
        ("io.systemd.Machine.Open", {"name": "foo", "mode": "tty"}),
        ("io.systemd.Machine.OpenRootDirectory", {"name": "foo"}),
        ("io.systemd.Machine.Register", {"name": "q2", "class": "container", "leader": foo}),
        ("io.systemd.service.SetLogLevel", {"level": 7}),
        ("io.systemd.service.GetEnvironment", {}),
    ):
        assert nobody_call(MACHINE, method, parameters) == denied, method
    assert nobody_call(MACHINE, "io.systemd.Machine.Terminate", {"name": "nosuch"}) == (
        '{"error":"io.systemd.Machine.NoSuchMachine","parameters":{}}'
    )
    assert nobody_call(MACHINE, "io.systemd.service.Ping", {}) == '{"parameters":{}}'
    assert os.path.exists(f"/proc/{foo}")


# io.systemd.service


def test_service_interface(machined: System) -> None:
    assert vcall("io.systemd.service", "Ping") == {}
    assert vcall("io.systemd.service", "SetLogLevel", level=7) == {}
    level = machined.busctl(
        "get-property",
        "org.freedesktop.machine1",
        "/org/freedesktop/LogControl1",
        "org.freedesktop.LogControl1",
        "LogLevel",
    )
    assert level.stdout.strip() == 's "debug"'
    assert verror("io.systemd.service", "SetLogLevel", level=9) == invalid("level")
    environment = vcall("io.systemd.service", "GetEnvironment")["environment"]
    assert any(e.startswith("PATH=") for e in environment)
    assert raw_call(MACHINE, {"method": "io.systemd.service.Reload", "parameters": {}}) == (
        '{"error":"org.varlink.service.MethodNotFound","parameters":{"method":"io.systemd.service.Reload"}}'
    )


# io.systemd.MachineImage


def image(method: str, more: bool = False, **parameters: Any) -> Any:
    return vcall("io.systemd.MachineImage", method, IMAGE, more, **parameters)


def image_error(method: str, more: bool = False, **parameters: Any) -> tuple:
    return verror("io.systemd.MachineImage", method, IMAGE, more, **parameters)


NO_SUCH_IMAGE = ("io.systemd.MachineImage.NoSuchImage", {})


@pytest.fixture
def pool(machined: System) -> Iterator[Path]:
    img = Path("/var/lib/machines/img1")
    busybox_root(img, os_id="testos")
    (img / "etc/hostname").write_text("img1host\n")
    (img / "etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n")
    (img / "etc/machine-info").write_text("PRETTY_HOSTNAME=Image One\n")
    yield img


def test_image_list(machined: System, pool: Path) -> None:
    listed = image("List", more=True)
    assert sorted(i["name"] for i in listed) == [".host", "img1"]
    img1 = image("List", name="img1")
    assert img1["path"] == "/var/lib/machines/img1" and img1["type"] == "directory" and img1["class"] == "machine"
    assert img1["readOnly"] is False and img1["creationTimestamp"] > 0
    meta = image("List", name="img1", acquireMetadata="yes")
    assert meta["hostname"] == "img1host" and meta["machineId"] == "fedcba9876543210fedcba9876543210"
    assert meta["machineInfo"] == ["PRETTY_HOSTNAME=Image One"] and "ID=testos" in meta["OSRelease"]
    assert image_error("List") == ("org.varlink.service.ExpectedMore", {})
    assert image_error("List", name="nosuch") == NO_SUCH_IMAGE
    assert image_error("List", name="../x") == invalid("name")


def test_image_update_clone_remove(machined: System, pool: Path) -> None:
    assert image("Update", name="img1", newName="img2") == {}
    assert image_error("List", name="img1") == NO_SUCH_IMAGE
    assert image_error("Update", name="img2", newName="../y") == invalid("newName")
    assert image_error("Update", name="nosuch", readOnly=True) == NO_SUCH_IMAGE
    assert image("Update", name="img2", readOnly=True) == {}
    assert image("List", name="img2")["readOnly"] is True
    assert image("Update", name="img2", readOnly=False) == {}
    assert image("Update", name="img2") == {}
    assert image_error("Update", name="img2", limit=1 << 30) == ("io.systemd.System", {"errno": 95})  # tmpfs
    assert image("Clone", name="img2", newName="img3") == {}
    assert (Path("/var/lib/machines/img3/etc/hostname")).read_text() == "img1host\n"
    assert image_error("Clone", name="img2", newName="img3") == ("io.systemd.System", {"errno": 17})
    assert image("Clone", name="img2", newName="img4", readOnly=True) == {}
    assert image("List", name="img4")["readOnly"] is True
    assert image_error("Clone", name="nosuch", newName="img5") == NO_SUCH_IMAGE
    assert image_error("Clone", name="img2") == invalid("newName")
    assert image("Remove", name="img3") == {}
    assert image("Remove", name="img4") == {}
    assert not Path("/var/lib/machines/img3").exists()
    assert image_error("Remove", name="nosuch") == NO_SUCH_IMAGE
    assert image_error("Remove", name=".host") == ("io.systemd.System", {"errno": 30})


def test_image_pool_methods(machined: System, pool: Path) -> None:
    assert image_error("SetPoolLimit", limit=1 << 30) == ("io.systemd.MachineImage.NotSupported", {})
    assert image_error("CleanPool", mode="all") == ("org.varlink.service.ExpectedMore", {})
    assert image_error("CleanPool", more=True, mode="bogus") == invalid("mode")
    assert image_error("CleanPool", more=True, mode="hidden") == NO_SUCH_IMAGE  # nothing hidden to remove
    busybox_root(Path("/var/lib/machines/.hidden"))
    assert image("CleanPool", more=True, mode="hidden") == [{"name": ".hidden"}]
    assert not Path("/var/lib/machines/.hidden").exists()
    assert image("CleanPool", more=True, mode="all") == [{"name": "img1"}]
