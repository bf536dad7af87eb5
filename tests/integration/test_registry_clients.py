"""The machine registry through real clients: machinectl, busctl, gdbus, ps, libsystemd."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.system import STATE_DIR, System

MANAGER = "/org/freedesktop/machine1"


def test_list_empty(machined: System) -> None:
    result = machined.machinectl("list")
    assert result.returncode == 0
    assert result.stdout == "No machines.\n"


def test_register_list_status_show(machined: System) -> None:
    leader = machined.spawn_leader("machine-foo.scope")
    reg = machined.register("foo", leader, root="/")
    assert reg.stdout == 'o "/org/freedesktop/machine1/machine/foo"\n', reg.output

    listing = machined.machinectl("list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES"]
    assert lines[1].split()[:3] == ["foo", "container", "-"]
    assert lines[-1] == "1 machines listed."

    no_legend = machined.machinectl("list", "--no-legend")
    assert [line.split()[:2] for line in no_legend.stdout.splitlines()] == [["foo", "container"]]

    status = machined.machinectl("status", "foo")
    assert status.stdout.splitlines()[0] == "foo"
    assert f"Leader: {leader.pid} (sleep)" in status.stdout
    assert "Class: container" in status.stdout
    assert "Unit: machine-foo.scope" in status.stdout

    show = machined.machinectl("show", "foo")
    props = dict(line.split("=", 1) for line in show.stdout.splitlines())
    assert props["Name"] == "foo"
    assert props["Unit"] == "machine-foo.scope"
    assert props["Leader"] == str(leader.pid)
    assert props["Class"] == "container"
    assert props["RootDirectory"] == "/"
    assert props["State"] == "running"

    only_leader = machined.machinectl("show", "-p", "Leader", "foo")
    assert only_leader.stdout == f"Leader={leader.pid}\n"
    value = machined.machinectl("show", "-p", "Leader", "--value", "foo")
    assert value.stdout == f"{leader.pid}\n"


def test_busctl_and_gdbus_read_properties(machined: System) -> None:
    leader = machined.spawn_leader("machine-web01.scope")
    machine_id = "16 " + " ".join(str(b) for b in range(1, 17))
    machined.register("web01", leader, service="my-svc", machine_id=machine_id, ifindices=[3, 7])
    path = "/org/freedesktop/machine1/machine/web01"
    iface = "org.freedesktop.machine1.Machine"
    assert machined.busctl("get-property", "org.freedesktop.machine1", path, iface, "Leader").stdout == (
        f"u {leader.pid}\n"
    )
    assert machined.busctl("get-property", "org.freedesktop.machine1", path, iface, "Service").stdout == (
        's "my-svc"\n'
    )
    assert machined.busctl("get-property", "org.freedesktop.machine1", path, iface, "NetworkInterfaces").stdout == (
        "ai 2 3 7\n"
    )
    assert machined.busctl("get-property", "org.freedesktop.machine1", path, iface, "Id").stdout == (
        f"ay {machine_id}\n"
    )
    # the hidden Scope property answers Get, but is in neither GetAll nor introspection
    assert machined.busctl("get-property", "org.freedesktop.machine1", path, iface, "Scope").stdout == (
        's "machine-web01.scope"\n'
    )
    getall = machined.busctl(
        "--json=short",
        "call",
        "org.freedesktop.machine1",
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        iface,
    )
    keys = list(json.loads(getall.stdout)["data"][0].keys())
    assert keys == [
        "Name",
        "Id",
        "Timestamp",
        "TimestampMonotonic",
        "Service",
        "Unit",
        "Leader",
        "Class",
        "RootDirectory",
        "NetworkInterfaces",
        "State",
    ]

    by_gdbus = machined.gdbus(MANAGER, "org.freedesktop.machine1.Manager.GetMachine", "web01")
    assert by_gdbus.stdout == "(objectpath '/org/freedesktop/machine1/machine/web01',)\n"
    listed = machined.gdbus(MANAGER, "org.freedesktop.machine1.Manager.ListMachines")
    # GVariant text names the type only on the first element of an array
    assert listed.stdout.count("('") == 2
    assert "'web01', 'container', 'my-svc', '/org/freedesktop/machine1/machine/web01')" in listed.stdout.replace(
        "objectpath ", ""
    )
    assert "('.host', 'host', '', '/org/freedesktop/machine1/machine/_2ehost')" in listed.stdout.replace(
        "objectpath ", ""
    )


def test_host_machine(machined: System) -> None:
    path = "/org/freedesktop/machine1/machine/_2ehost"
    show = machined.machinectl("show", ".host")
    props = dict(line.split("=", 1) for line in show.stdout.splitlines())
    assert props["Name"] == ".host"
    assert props["Class"] == "host"
    assert props["Leader"] == "1"
    assert props["Unit"] == "-.slice"
    assert props["RootDirectory"] == "/"
    assert props["State"] == "running"
    machine_id = Path("/etc/machine-id").read_text().strip()
    assert props["Id"] == machine_id
    assert (
        machined.busctl(
            "get-property", "org.freedesktop.machine1", path, "org.freedesktop.machine1.Machine", "TimestampMonotonic"
        ).stdout
        == "t 0\n"
    )
    assert not (STATE_DIR / ".host").exists()


def test_object_paths_and_self(machined: System) -> None:
    leader = machined.spawn_leader("machine-a\\x2db.c.scope")
    machined.register("a-b.c", leader)
    tree = machined.busctl("tree", "--list", "org.freedesktop.machine1").stdout.split()
    assert "/org/freedesktop/machine1/machine/a_2db_2ec" in tree
    assert "/org/freedesktop/machine1/machine/_2ehost" in tree
    # lookups accept non-canonical escapes
    lenient = machined.busctl(
        "get-property",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1/machine/_61_2db_2ec",
        "org.freedesktop.machine1.Machine",
        "Name",
    )
    assert lenient.stdout == 's "a-b.c"\n'
    # "self" from a host process is no machine
    self_call = machined.busctl(
        "get-property",
        "org.freedesktop.machine1",
        "/org/freedesktop/machine1/machine/self",
        "org.freedesktop.machine1.Machine",
        "Name",
    )
    assert self_call.returncode != 0
    assert "Unknown object '/org/freedesktop/machine1/machine/self'." in self_call.stderr


def test_self_resolves_for_a_process_inside_the_machine(machined: System) -> None:
    leader = machined.spawn_leader("machine-inner.scope")
    machined.register("inner", leader)
    # a second process in the machine's cgroup asks for …/machine/self and GetMachineByPID(0)
    script = (
        f"echo $$ > {leader.cgroup}/cgroup.procs && "
        "busctl get-property org.freedesktop.machine1 /org/freedesktop/machine1/machine/self "
        "org.freedesktop.machine1.Machine Name && "
        "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager "
        "GetMachineByPID u 0"
    )
    result = machined.run("sh", "-c", script)
    assert result.stdout == 's "inner"\no "/org/freedesktop/machine1/machine/inner"\n', result.output


def test_get_machine_by_pid(machined: System) -> None:
    leader = machined.spawn_leader("machine-foo.scope")
    machined.register("foo", leader)
    assert machined.manager_call("GetMachineByPID", "u", leader.pid).stdout == (
        'o "/org/freedesktop/machine1/machine/foo"\n'
    )
    # a non-leader process in the machine's unit cgroup is found through the unit
    other = machined.spawn_leader("machine-foo.scope")
    assert machined.manager_call("GetMachineByPID", "u", other.pid).stdout == (
        'o "/org/freedesktop/machine1/machine/foo"\n'
    )
    one = machined.manager_call("GetMachineByPID", "u", 1)
    assert one.stderr == "Call failed: PID 1 does not belong to any known machine\n"


def test_ps_shows_machine(machined: System) -> None:
    leader = machined.spawn_leader("machine-psm.scope")
    machined.register("psm", leader)
    ps = machined.run("ps", "-o", "pid=,machine=", "-p", str(leader.pid))
    assert ps.stdout.split() == [str(leader.pid), "psm"]
    ps_self = machined.run("ps", "-o", "machine=", "-p", str(os.getpid()))
    assert ps_self.stdout.strip() == "-"


def test_unregister(machined: System) -> None:
    leader = machined.spawn_leader("machine-foo.scope")
    machined.register("foo", leader)
    assert (STATE_DIR / "foo").exists()
    assert os.readlink(STATE_DIR / "unit:machine-foo.scope") == "foo"
    result = machined.manager_call("UnregisterMachine", "s", "foo")
    assert result.returncode == 0, result.output
    assert not (STATE_DIR / "foo").exists()
    assert not os.path.lexists(STATE_DIR / "unit:machine-foo.scope")
    assert machined.machinectl("list").stdout == "No machines.\n"
    assert leader.process is not None and leader.process.poll() is None, "unregister must not kill the leader"
    # .host: success, nothing happens
    assert machined.manager_call("UnregisterMachine", "s", ".host").returncode == 0
    assert machined.manager_call("GetMachine", "s", ".host").returncode == 0


def test_state_survives_restart(machined: System) -> None:
    leader = machined.spawn_leader("machine-keep.scope")
    machined.register("keep", leader, service="svc", root="/srv")
    before = (STATE_DIR / "keep").read_text()
    ts_before = machined.machinectl("show", "-p", "Timestamp", "keep").stdout
    machined.restart_daemon()
    assert (STATE_DIR / "keep").read_text() == before
    show = machined.machinectl("show", "-p", "Leader", "-p", "Service", "-p", "RootDirectory", "keep")
    assert sorted(show.stdout.splitlines()) == sorted([f"Leader={leader.pid}", "Service=svc", "RootDirectory=/srv"])
    assert machined.machinectl("show", "-p", "Timestamp", "keep").stdout == ts_before
    assert machined.manager_call("GetMachine", "s", "keep").stdout == 'o "/org/freedesktop/machine1/machine/keep"\n'


def test_state_directory_created_and_files_kept_on_sigterm(machined: System) -> None:
    assert STATE_DIR.is_dir()
    assert STATE_DIR.stat().st_mode & 0o777 == 0o755
    leader = machined.spawn_leader("machine-foo.scope")
    machined.register("foo", leader)
    assert machined.stop_daemon() == 0
    assert (STATE_DIR / "foo").exists()
    assert [p.name for p in STATE_DIR.iterdir() if p.name.startswith(".")] == []


def test_libsystemd_readers(machined: System) -> None:
    from harness.libsystemd import machine_class, machine_ifindices, machine_names, pid_machine_name

    leader = machined.spawn_leader("machine-lib.scope")
    machined.register("lib", leader, machine_class="vm", ifindices=[3, 7])
    assert machine_names() == ["lib"]
    assert machine_class("lib") == "vm"
    assert machine_class(".host") == "host"
    assert machine_ifindices("lib") == [3, 7]
    assert pid_machine_name(leader.pid) == "lib"
    assert pid_machine_name(os.getpid()) is None
