"""pymachined as a system service: bus policy, LogControl1, sd_notify, logging, shipped files."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.system import BUS_SOCKET, POLICY, PYMACHINED, REPO, System, system, wait_for

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
MANAGER = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
# 252's policy: what a non-root caller may send (dbus-api.md §10.1)
ALLOWED_MANAGER = {
    "ListMachines",
    "ListImages",
    "GetMachine",
    "GetMachineByPID",
    "GetImage",
    "GetMachineAddresses",
    "GetMachineOSRelease",
    "GetMachineUIDShift",
    "OpenMachineLogin",
    "OpenMachineShell",
    "UnregisterMachine",
    "TerminateMachine",
    "KillMachine",
    "BindMountMachine",
    "CopyFromMachine",
    "CopyToMachine",
    "RemoveImage",
    "RenameImage",
    "CloneImage",
    "MarkImageReadOnly",
    "SetPoolLimit",
    "SetImageLimit",
    "GetImageHostname",
    "GetImageMachineID",
    "GetImageMachineInfo",
    "GetImageOSRelease",
    "CleanPool",
    "MapFromMachineUser",
    "MapToMachineUser",
    "MapFromMachineGroup",
    "MapToMachineGroup",
}
DENIED_MANAGER = {
    "CreateMachine",
    "CreateMachineWithNetwork",
    "RegisterMachine",
    "RegisterMachineWithNetwork",
    "OpenMachinePTY",
    "CopyFromMachineWithFlags",
    "CopyToMachineWithFlags",
    "OpenMachineRootDirectory",
}


def test_policy_loads_without_warnings(tmp_path: Path) -> None:
    config = tmp_path / "bus.conf"
    template = (REPO / "tests/harness/system-bus.conf.in").read_text()
    socket_path = tmp_path / "bus"
    config.write_text(template.replace("@MACHINE1_POLICY@", str(POLICY)).replace(str(BUS_SOCKET), str(socket_path)))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(socket_path.exists, "the bus")
    finally:
        bus.terminate()
        _, err = bus.communicate(timeout=10)
    complaints = [line for line in err.splitlines() if "fd limit" not in line]
    assert complaints == []


def test_policy_matrix_for_unprivileged_callers(machined: System) -> None:
    for method in sorted(ALLOWED_MANAGER | DENIED_MANAGER):
        result = machined.run(*NOBODY, "busctl", "call", *MANAGER, method)
        rejected_by_bus = "Access denied" in result.stderr and method in DENIED_MANAGER
        if method in DENIED_MANAGER:
            assert result.returncode == 1 and rejected_by_bus, (method, result.output)
        else:
            # the bus lets it through: pymachined answers (the missing arguments, or the call itself)
            assert "Access denied" not in result.stderr, (method, result.output)
    for iface, member in (("org.freedesktop.DBus.Peer", "Ping"), ("org.freedesktop.DBus.Introspectable", "Introspect")):
        assert (
            machined.run(
                *NOBODY, "busctl", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1", iface, member
            ).returncode
            == 0
        )
    set_level = machined.run(
        *NOBODY,
        "busctl",
        "set-property",
        "org.freedesktop.machine1",
        "/org/freedesktop/LogControl1",
        "org.freedesktop.LogControl1",
        "LogLevel",
        "s",
        "debug",
    )
    assert set_level.returncode == 1 and "Access denied" in set_level.stderr


def test_log_control(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        path = ["org.freedesktop.machine1", "/org/freedesktop/LogControl1", "org.freedesktop.LogControl1"]
        t.busctl("get-property", *path, "LogLevel", "LogTarget")
        for value in ("info", "5", "debug", "7", "bogus", "8", ""):
            t.busctl("set-property", *path, "LogLevel", "s", value)
            t.busctl("get-property", *path, "LogLevel")
        for value in ("console", "null", "nonsense", "auto"):
            t.busctl("set-property", *path, "LogTarget", "s", value)
            t.busctl("get-property", *path, "LogTarget")
        t.busctl("set-property", *path, "SyslogIdentifier", "s", "x")
        t.busctl("set-property", *path, "LogLevel", "u", "5")
        introspect = s.busctl(
            "--json=short", "call", path[0], path[1], "org.freedesktop.DBus.Introspectable", "Introspect"
        )
        t.note("introspection", json.loads(introspect.stdout)["data"][0])

    assert_same_as_252(scenario, tmp_path)


def test_syslog_identifier_and_level_from_environment(tmp_path: Path) -> None:
    with system(PYMACHINED, tmp_path, start=False) as s:
        s.start_daemon(extra_env={"SYSTEMD_LOG_LEVEL": "err"})
        path = ["org.freedesktop.machine1", "/org/freedesktop/LogControl1", "org.freedesktop.LogControl1"]
        assert s.busctl("get-property", *path, "LogLevel").stdout == 's "err"\n'
        assert s.busctl("get-property", *path, "SyslogIdentifier").stdout == 's "pymachined"\n'


def test_sd_notify_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify"
    listener.bind(str(notify_path))
    listener.settimeout(10)
    with system(PYMACHINED, tmp_path, start=False) as s:
        s.start_daemon(extra_env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"})
        messages: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 5:
            messages.append(listener.recv(4096).decode())
        assert s.daemon is not None
        s.daemon.send_signal(signal.SIGTERM)
        messages.append(listener.recv(4096).decode())
        s.daemon.wait(timeout=10)
    listener.close()
    assert "READY=1\nSTATUS=Processing requests..." in messages
    assert messages.count("WATCHDOG=1") >= 5  # every 0.1 s: half of WATCHDOG_USEC
    assert messages[-1] == "STOPPING=1\nSTATUS=Shutting down..."


def test_log_lines_carry_priorities_when_stderr_is_the_journal(tmp_path: Path) -> None:
    log = tmp_path / "journal-stream"
    log.touch()
    st = os.stat(log)
    with system(PYMACHINED, tmp_path, start=False) as s:
        s.daemon_log = log
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "SYSTEMD_LOG_LEVEL": "info"}
        argv = list(PYMACHINED.argv)
        proc = subprocess.Popen(
            argv,
            env={**s.env(), **env, "PYTHONPATH": str(REPO / "src")},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "Serving" in log.read_text(), "the daemon to log", process=proc)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    lines = log.read_text().splitlines()
    assert any(re.fullmatch(r"<6>Serving org\.freedesktop\.machine1 .*", line) for line in lines), lines
    assert all(re.match(r"<\d>", line) for line in lines), lines


def test_shipped_files() -> None:
    unit = (REPO / "data/systemd/pymachined.service.in").read_text()
    for line in (
        "Type=notify",
        "BusName=org.freedesktop.machine1",
        "WatchdogSec=3min",
        "Alias=dbus-org.freedesktop.machine1.service",
        "ExecStart=@BINDIR@/pymachined",
        "Documentation=file:@DOCDIR@/README.md",
    ):
        assert line in unit.splitlines()
    activation = (REPO / "data/dbus-1/system-services/org.freedesktop.machine1.service").read_text()
    assert "SystemdService=dbus-org.freedesktop.machine1.service" in activation.splitlines()
    tree = ET.parse(REPO / "data/polkit-1/actions/org.freedesktop.machine1.policy")
    actions = {a.get("id"): a for a in tree.getroot().iter("action")}
    expected = {
        "login": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "host-login": ("auth_admin", "auth_admin", "yes"),
        "shell": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "host-shell": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "open-pty": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "host-open-pty": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "manage-machines": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "manage-images": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "create-machine": ("auth_admin", "auth_admin", "auth_admin_keep"),
        "register-machine": ("auth_admin", "auth_admin", "auth_admin_keep"),
    }
    assert sorted(actions) == sorted(f"org.freedesktop.machine1.{name}" for name in expected)
    for name, defaults in expected.items():
        action = actions[f"org.freedesktop.machine1.{name}"]
        found = tuple(action.findtext(f"defaults/{key}") for key in ("allow_any", "allow_inactive", "allow_active"))
        assert found == defaults, name


def test_polkit_reads_the_actions(machined: System) -> None:
    machined.start_polkit()
    listed = machined.run("pkaction").stdout.split()
    assert [a for a in listed if a.startswith("org.freedesktop.machine1.")] == sorted(
        f"org.freedesktop.machine1.{name}"
        for name in (
            "login",
            "host-login",
            "shell",
            "host-shell",
            "open-pty",
            "host-open-pty",
            "manage-machines",
            "manage-images",
            "create-machine",
            "register-machine",
        )
    )
    verbose = machined.run("pkaction", "--verbose", "--action-id", "org.freedesktop.machine1.host-login").stdout
    assert "implicit active:   yes" in verbose and "vendor:            pymachined" in verbose
