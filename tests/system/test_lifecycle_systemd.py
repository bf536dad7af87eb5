"""The systemd1 backend against a real systemd (booted Debian 12), step by step as systemd-machined 252."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from harness.differential import Transcript, assert_same_as_252_booted
from harness.markers import needs_nspawn

pytestmark = [
    pytest.mark.slow,
    needs_nspawn,
]

MANAGER = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]


def holder(ct: Any, t: Transcript, unit: str) -> int:
    """A process of a service of its own, to hand to CreateMachine as leader."""
    r = ct.run("systemd-run", f"--unit={unit}", "--quiet", "sleep", "infinity")
    assert r.returncode == 0, r.output
    pid = int(ct.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout)
    t.leaders.append(pid)
    return pid


SCOPE_PROPS = [
    "-p",
    "Slice",
    "-p",
    "Description",
    "-p",
    "TasksMax",
    "-p",
    "Delegate",
    "-p",
    "CollectMode",
    "-p",
    "ActiveState",
]


def test_create_terminate_kill_gc(tmp_path: Path) -> None:
    def scenario(ct: Any, t: Transcript) -> None:
        t.run("machinectl", "list")
        leader = holder(ct, t, "hold-web")
        t.run(
            "busctl",
            "call",
            *MANAGER,
            "CreateMachine",
            "sayssusa(sv)",
            "web",
            "0",
            "svc",
            "container",
            str(leader),
            "/",
            "0",
        )
        t.run("systemctl", "show", "machine-web.scope", *SCOPE_PROPS)
        t.run("cat", "/run/systemd/machines/web")
        t.run("machinectl", "list", "--no-legend")
        t.run("machinectl", "show", "web", "-p", "Unit", "-p", "Leader", "-p", "Class", "-p", "State")
        t.run("sh", "-c", f"cat /proc/{leader}/cgroup | grep ^0::")
        t.run("machinectl", "kill", "--kill-whom=all", "--signal=SIGCONT", "web")
        t.run("machinectl", "terminate", "web")
        ct.wait_until("! machinectl show web >/dev/null 2>&1", "web to be collected", timeout=20)
        t.run("machinectl", "list")
        t.run("systemctl", "is-active", "machine-web.scope")
        t.run("ls", "/run/systemd/machines")

        # caller properties follow the defaults and win; a second Description overrides the first
        leader2 = holder(ct, t, "hold-vm")
        t.run(
            "busctl",
            "call",
            *MANAGER,
            "CreateMachineWithNetwork",
            "sayssusaia(sv)",
            "my-vm",
            "0",
            "",
            "vm",
            str(leader2),
            "",
            "0",
            "2",
            "Description",
            "s",
            "custom description",
            "TasksMax",
            "t",
            "77",
        )
        t.run("systemctl", "show", "machine-my\\x2dvm.scope", *SCOPE_PROPS)
        # GC follows systemd: stopping the scope behind machined's back removes the machine
        t.run("systemctl", "stop", "machine-my\\x2dvm.scope")
        ct.wait_until("! machinectl show my-vm >/dev/null 2>&1", "my-vm to be collected", timeout=20)
        t.run("machinectl", "list")

        # systemd's errors are forwarded verbatim
        leader3 = holder(ct, t, "hold-bad")
        t.run(
            "busctl",
            "call",
            *MANAGER,
            "CreateMachine",
            "sayssusa(sv)",
            "bad",
            "0",
            "",
            "container",
            str(leader3),
            "",
            "1",
            "Frobnicate",
            "b",
            "true",
        )
        t.run(
            "busctl", "call", *MANAGER, "CreateMachine", "sayssusa(sv)", "bad", "0", "", "container", "999999", "", "0"
        )
        t.run("machinectl", "list")

    steps = dict(assert_same_as_252_booted(scenario, tmp_path))
    assert "ActiveState=active" in steps["systemctl show machine-web.scope " + " ".join(SCOPE_PROPS)]
    assert "TasksMax=77" in steps["systemctl show machine-my\\x2dvm.scope " + " ".join(SCOPE_PROPS)]


def test_registered_machine_terminate_stops_the_registrant(tmp_path: Path) -> None:
    def scenario(ct: Any, t: Transcript) -> None:
        r = ct.run(
            "systemd-run",
            "--unit=reg-leader",
            "--quiet",
            "sh",
            "-c",
            "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 "
            "org.freedesktop.machine1.Manager RegisterMachine sayssus reg 0 '' container $$$$ ''; "
            "exec sleep infinity",
        )
        assert r.returncode == 0, r.output
        ct.wait_until("machinectl show reg >/dev/null 2>&1", "reg to register", timeout=20)
        t.leaders.append(int(ct.run("machinectl", "show", "-p", "Leader", "--value", "reg").stdout))
        t.run("machinectl", "show", "reg", "-p", "Unit", "-p", "State")
        t.run("machinectl", "terminate", "reg")
        ct.wait_until("! systemctl is-active -q reg-leader.service", "the registrant's unit to stop", timeout=20)
        ct.wait_until("! machinectl show reg >/dev/null 2>&1", "reg to be collected", timeout=20)
        t.run("machinectl", "list")
        t.run("systemctl", "is-active", "reg-leader.service")

    assert_same_as_252_booted(scenario, tmp_path)


def test_journal_has_no_tracebacks(tmp_path: Path) -> None:
    """One pymachined boot through the scenario above leaves no Python traceback in the journal."""
    from harness.booted import booted_container

    with booted_container(tmp_path, machined="pymachined") as ct:
        r = ct.run("systemd-run", "--unit=hold-x", "--quiet", "sleep", "infinity")
        assert r.returncode == 0
        pid = ct.run("systemctl", "show", "-p", "MainPID", "--value", "hold-x").stdout.strip()
        out = ct.run(
            "busctl", "call", *MANAGER, "CreateMachine", "sayssusa(sv)", "x", "0", "", "container", pid, "", "0"
        )
        assert out.stdout == 'o "/org/freedesktop/machine1/machine/x"\n', out.output
        assert ct.run("machinectl", "terminate", "x").returncode == 0
        journal = ct.journal("pymachined.service")
        assert "Unit backend: systemd1" in journal
        assert not re.search(r"Traceback|ERROR", journal), journal
