"""The machine registry, step by step identical to systemd-machined 252."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.system import STATE_DIR, Leader, System, wait_for

MACHINE = "/org/freedesktop/machine1/machine"


def show_state(t: Transcript, name: str) -> None:
    t.note(f"state file {name}", (STATE_DIR / name).read_text())
    t.note("state dir", "\n".join(sorted(p.name for p in STATE_DIR.iterdir())))


def test_register_list_status_show_unregister(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        t.machinectl("list")
        foo = t.leader("machine-foo.scope")
        bar = t.leader("machine-bar.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "/")
        t.manager("RegisterMachine", "sayssus", "bar", 16, *range(1, 17), "my-svc", "vm", bar.pid, "/srv/bar")
        show_state(t, "foo")
        show_state(t, "bar")
        t.machinectl("list")
        t.machinectl("list", "--no-legend")
        t.machinectl("status", "foo")
        t.machinectl("show", "foo")
        t.machinectl("show", "bar")
        t.machinectl("show", "-p", "Leader", "foo")
        t.machinectl("show", ".host", "-p", "Name", "-p", "Class", "-p", "Leader", "-p", "Unit", "-p", "State")
        t.machinectl("status", "nosuch")
        t.manager("GetMachine", "s", "foo")
        t.manager("GetMachine", "s", ".host")
        t.manager("GetMachineByPID", "u", foo.pid)
        t.manager("GetMachineByPID", "u", bar.pid)
        t.run("ps", "-o", "pid=,machine=", "-p", str(foo.pid))
        t.manager("UnregisterMachine", "s", "foo")
        t.note("state dir after unregister", "\n".join(sorted(p.name for p in STATE_DIR.iterdir())))
        t.machinectl("list")
        t.manager("UnregisterMachine", "s", "bar")
        t.machinectl("list")

    assert_same_as_252(scenario, tmp_path)


def test_registration_errors(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        other = t.leader("machine-foo2.scope")
        in_root = t.leader("stray", slice_="")
        in_root_pid = in_root.pid
        # move the stray leader into the namespace root cgroup: no unit there
        (in_root.cgroup.parent / "cgroup.procs").write_text(str(in_root_pid))
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "")
        for name, mid, cls, pid, root in [
            ("bad_name", ["0"], "container", other.pid, ""),
            ("-bad", ["0"], "container", other.pid, ""),
            ("x" * 65, ["0"], "container", other.pid, ""),
            (".host", ["0"], "container", other.pid, ""),
            ("ok2", ["3", "1", "2", "3"], "container", other.pid, ""),
            ("ok2", ["0"], "host", other.pid, ""),
            ("ok2", ["0"], "nonsense", other.pid, ""),
            ("ok2", ["0"], "container", 1, ""),
            ("ok2", ["0"], "container", other.pid, "rel/path"),
            ("foo", ["0"], "container", other.pid, ""),
            ("ok2", ["0"], "container", 999999, ""),
            ("ok2", ["0"], "container", in_root_pid, ""),
            ("ok2", ["0"], "container", 0, ""),
            ("ok2", ["0"], "", other.pid, ""),
            ("bad_name", ["3", "1", "2", "3"], "host", 1, "rel"),
        ]:
            t.manager("RegisterMachine", "sayssus", name, *mid, "", cls, pid, root)
        t.manager("RegisterMachineWithNetwork", "sayssusai", "ok3", 0, "", "container", other.pid, "", 2, 3, 0)
        t.manager("RegisterMachineWithNetwork", "sayssusai", "ok3", 0, "", "container", other.pid, "", 1, -5)
        t.manager("GetMachine", "s", "nosuch")
        t.manager("GetMachine", "s", "")
        t.manager("GetMachineByPID", "u", 999999)
        t.manager("GetMachineByPID", "u", 4294967295)
        t.manager("GetMachineByPID", "u", 1)
        t.manager("GetMachineByPID", "u", in_root_pid)
        t.manager("GetMachineByPID", "u", 0)
        t.manager("UnregisterMachine", "s", "nosuch")
        t.manager("UnregisterMachine", "s", ".host")
        t.machinectl("list")
        # error names as gdbus prints them
        for args in (
            ["org.freedesktop.machine1.Manager.GetMachine", "nosuch"],
            ["org.freedesktop.machine1.Manager.GetMachineByPID", "999999"],
            ["org.freedesktop.machine1.Manager.RegisterMachine", "bad_name", "[]", "", "container", str(other.pid), ""],
            ["org.freedesktop.machine1.Manager.RegisterMachine", "foo", "[]", "", "container", str(other.pid), ""],
            ["org.freedesktop.machine1.Manager.RegisterMachine", "ok2", "[]", "", "container", "999999", ""],
            ["org.freedesktop.machine1.Manager.RegisterMachine", "ok2", "[]", "", "container", str(in_root_pid), ""],
            ["org.freedesktop.machine1.Manager.RegisterMachine", "ok2", "[]", "", "", str(other.pid), ""],
        ):
            t.run(
                "gdbus",
                "call",
                "--system",
                "--dest",
                "org.freedesktop.machine1",
                "--object-path",
                "/org/freedesktop/machine1",
                "--method",
                *args,
            )

    assert_same_as_252(scenario, tmp_path)


def test_duplicate_leader_and_shared_unit(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        same_unit = t.leader("machine-foo.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "")
        t.manager("RegisterMachine", "sayssus", "dup", 0, "", "container", foo.pid, "")
        t.manager("RegisterMachine", "sayssus", "twin", 0, "", "container", same_unit.pid, "")
        t.machinectl("list")
        t.manager("GetMachineByPID", "u", same_unit.pid)
        t.manager("GetMachine", "s", "dup")
        # (252 then also deletes foo's unit: link while GC'ing the failed machine: a bug we do not
        # reproduce, so the state directory is not compared here; see docs/deviations.md.)

    assert_same_as_252(scenario, tmp_path)


def test_state_file_bytes_and_escaping(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        a = t.leader("machine-esc.scope")
        b = t.leader("machine-n.scope")
        t.manager(
            "RegisterMachine",
            "sayssus",
            "esc",
            0,
            "svc \"q\" \\ 'x' tab\there ä",
            "container",
            a.pid,
            "/srv/with space/ä",
        )
        t.manager("RegisterMachineWithNetwork", "sayssusai", "n", 16, *([0] * 16), "", "vm", b.pid, "", 3, 7, 3, 1)
        show_state(t, "esc")
        show_state(t, "n")
        t.busctl(
            "get-property",
            "org.freedesktop.machine1",
            f"{MACHINE}/esc",
            "org.freedesktop.machine1.Machine",
            "Service",
            "RootDirectory",
            "Id",
        )
        t.busctl(
            "get-property",
            "org.freedesktop.machine1",
            f"{MACHINE}/n",
            "org.freedesktop.machine1.Machine",
            "NetworkInterfaces",
            "Id",
            "Class",
        )

    assert_same_as_252(scenario, tmp_path)


def test_restart_reloads_machines(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        bar = t.leader("machine-bar.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "svc", "container", foo.pid, "/")
        t.manager("RegisterMachineWithNetwork", "sayssusai", "bar", 0, "", "vm", bar.pid, "", 1, 5)
        before = {name: (STATE_DIR / name).read_text() for name in ("foo", "bar")}
        s.restart_daemon()
        for name in ("foo", "bar"):
            t.note(f"state file {name} unchanged", str((STATE_DIR / name).read_text() == before[name]))
        t.machinectl("list")
        t.machinectl("show", "foo")
        t.machinectl("show", "bar")
        t.manager("GetMachineByPID", "u", foo.pid)
        t.manager("UnregisterMachine", "s", "foo")
        t.machinectl("list")

    assert_same_as_252(scenario, tmp_path)


def test_reload_of_seeded_state_files(tmp_path: Path) -> None:
    """State files present before start: valid, invalid names, bad values, unstartable ones."""

    def scenario(s: System, t: Transcript) -> None:
        a = t.leader("machine-seeded.scope")
        s.stop_daemon()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "seeded").write_text(
            f"# This is private data. Do not parse.\nNAME=wrong\nSCOPE=machine-seeded.scope\nLEADER={a.pid}\n"
            "CLASS=container\nREALTIME=1795606247938593\nMONOTONIC=1131394912\nNETIF=1 2 x 5\nID=zz\n"
        )
        (STATE_DIR / "noclass").write_text(f"NAME=noclass\nLEADER={a.pid}\n")
        (STATE_DIR / "Bad_Name_").write_text("NAME=Bad_Name_\n")
        s.start_daemon()
        t.machinectl("list")
        t.machinectl("show", "seeded")
        listed = s.manager_call("ListMachines", options=["--json=short"])
        # 252 answers in hash order: compare the set
        t.note("ListMachines", "\n".join(sorted(" ".join(e) for e in json.loads(listed.stdout)["data"][0])))
        t.note("state dir", "\n".join(sorted(p.name for p in STATE_DIR.iterdir())))
        t.note("state file seeded", (STATE_DIR / "seeded").read_text())

    assert_same_as_252(scenario, tmp_path)


def test_generic_bus_errors(tmp_path: Path) -> None:
    """sd-bus's own replies: unknown object, method, property, interface, signature, read-only."""

    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "")
        dest = "org.freedesktop.machine1"
        props = "org.freedesktop.DBus.Properties"
        t.busctl("call", dest, f"{MACHINE}/nosuch", props, "GetAll", "s", "")
        t.busctl("call", dest, "/org/freedesktop/nope", props, "GetAll", "s", "")
        t.busctl("call", dest, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager", "NoSuchMethod")
        t.busctl("call", dest, "/org/freedesktop/machine1", "org.freedesktop.machine1.Nope", "GetMachine", "s", "x")
        t.busctl("call", dest, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager", "GetMachine", "u", "5")
        t.busctl("call", dest, f"{MACHINE}/foo", props, "Get", "ss", "org.freedesktop.machine1.Machine", "Nope")
        t.busctl("call", dest, f"{MACHINE}/foo", props, "Get", "ss", "org.freedesktop.machine1.Nope", "Name")
        t.busctl("call", dest, f"{MACHINE}/foo", props, "GetAll", "s", "org.freedesktop.machine1.Nope")
        t.busctl(
            "call", dest, f"{MACHINE}/foo", props, "Set", "ssv", "org.freedesktop.machine1.Machine", "Name", "s", "x"
        )
        t.busctl("call", dest, f"{MACHINE}/foo", props, "Get", "ss", "org.freedesktop.machine1.Machine", "Scope")
        t.busctl("get-property", dest, f"{MACHINE}/_66oo", "org.freedesktop.machine1.Machine", "Name")
        t.busctl("call", dest, f"{MACHINE}/foo", "org.freedesktop.DBus.Peer", "Ping")
        t.busctl(
            "call", dest, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager", "ListMachines", "s", "extra"
        )

    assert_same_as_252(scenario, tmp_path)


NETNS_LEADER = (
    "ip link set lo up && ip link add host0 address 02:00:00:00:00:01 type veth "
    "peer name peer0 address 02:00:00:00:00:02 && ip link set host0 up && "
    "ip link set peer0 up && ip addr add 192.0.2.5/24 dev host0 && ip addr add 198.51.100.7/24 dev host0 && "
    "ip -6 addr add fd00::5/64 dev host0 nodad && ip addr add 10.99.0.1/30 dev peer0 && exec sleep infinity"
)


def test_addresses_of_a_private_network(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        cgroup = s.make_cgroup("machine.slice/machine-net.scope")
        proc = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec unshare --net sh -c '{NETNS_LEADER}'"],
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: len((cgroup / "cgroup.procs").read_text().split()) == 1 and _settled(proc.pid), "netns")
        s.leaders.append(Leader(proc.pid, cgroup, proc))
        t.leaders.append(proc.pid)
        shared = t.leader("machine-shared.scope")
        t.manager("RegisterMachine", "sayssus", "net", 0, "", "container", proc.pid, "")
        t.manager("RegisterMachine", "sayssus", "shared", 0, "", "container", shared.pid, "")
        t.manager("RegisterMachine", "sayssus", "virt", 0, "", "vm", t.leader("machine-virt.scope").pid, "")
        t.manager("GetMachineAddresses", "s", "net")
        t.manager("GetMachineAddresses", "s", "shared")
        t.manager("GetMachineAddresses", "s", "virt")
        t.machinectl("list")
        t.machinectl("status", "net")

    assert_same_as_252(scenario, tmp_path)


def _settled(pid: int) -> bool:
    """The leader has run its setup and is now `sleep` in its own network namespace."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
    except OSError:
        return False


def test_unprivileged_callers(tmp_path: Path) -> None:
    """uid 65534: the bus policy and the daemon refuse what 252 refuses; reads still work."""

    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busctl"]
        manager = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
        t.run(*nobody, "call", *manager, "ListMachines")
        t.run(*nobody, "call", *manager, "GetMachine", "s", "foo")
        t.run(*nobody, "call", *manager, "GetMachineByPID", "u", str(foo.pid))
        t.run(
            *nobody,
            "get-property",
            "org.freedesktop.machine1",
            f"{MACHINE}/foo",
            "org.freedesktop.machine1.Machine",
            "Leader",
        )
        t.run(*nobody, "call", *manager, "RegisterMachine", "sayssus", "bar", "0", "", "container", str(foo.pid), "")
        t.run(
            *nobody,
            "call",
            *manager,
            "RegisterMachineWithNetwork",
            "sayssusai",
            "bar",
            "0",
            "",
            "container",
            str(foo.pid),
            "",
            "0",
        )
        t.run(*nobody, "call", *manager, "UnregisterMachine", "s", "foo")
        t.run(*nobody, "call", *manager, "UnregisterMachine", "s", "nosuch")
        t.run(
            *nobody,
            "call",
            "org.freedesktop.machine1",
            f"{MACHINE}/foo",
            "org.freedesktop.DBus.Properties",
            "Set",
            "ssv",
            "org.freedesktop.machine1.Machine",
            "Name",
            "s",
            "x",
        )
        t.machinectl("list")

    assert_same_as_252(scenario, tmp_path)
