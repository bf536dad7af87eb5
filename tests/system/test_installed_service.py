"""make install's result in a booted Debian 12 with systemd: verify, start, watchdog, activation, restart."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from harness.booted import booted_container
from harness.markers import needs_nspawn

pytestmark = [
    pytest.mark.slow,
    needs_nspawn,
]

REGISTER_SELF = (
    "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager "
    "RegisterMachine sayssus keeper 0 '' container $$$$ ''; exec sleep infinity"
)


def show(ct, unit: str, *props: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = ct.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_install_start_watchdog_activation_restart(tmp_path: Path) -> None:
    with booted_container(tmp_path, machined="pymachined") as ct:
        install = ct.run(
            "env", "PYMACHINED_VENV=/opt/pymachined-venv", "/opt/pymachined-repo/scripts/install", timeout=120
        )
        assert install.returncode == 0, install.output
        unit = "/etc/systemd/system/pymachined.service"
        assert "ExecStart=/opt/pymachined-venv/bin/pymachined" in ct.run("cat", unit).stdout
        verify = ct.run("systemd-analyze", "verify", unit)
        assert verify.returncode == 0 and verify.output.strip() == "", verify.output
        # the per-user instance: user unit, its activation alias, the session-bus activation file
        user_unit = "/etc/systemd/user/pymachined.service"
        assert "ExecStart=/opt/pymachined-venv/bin/pymachined --user" in ct.run("cat", user_unit).stdout
        assert ct.run("readlink", "/etc/systemd/user/dbus-org.freedesktop.machine1.service").stdout == (
            "pymachined.service\n"
        )
        session = ct.run("cat", "/usr/local/share/dbus-1/services/org.freedesktop.machine1.service").stdout
        assert "SystemdService=dbus-org.freedesktop.machine1.service" in session.splitlines()
        verify = ct.sh(f"XDG_RUNTIME_DIR=/tmp systemd-analyze --user verify {user_unit}")
        assert verify.returncode == 0 and verify.output.strip() == "", verify.output

        # bus activation: the first machinectl call starts it
        assert show(ct, "pymachined.service", "ActiveState")["ActiveState"] == "inactive"
        assert ct.run("machinectl", "list").returncode == 0
        state = show(ct, "pymachined.service", "ActiveState", "StatusText", "Type", "MainPID")
        assert state["ActiveState"] == "active" and state["StatusText"] == "Processing requests..."
        assert 'Status: "Processing requests..."' in ct.run("systemctl", "status", "pymachined").stdout

        # machines survive a restart
        assert ct.run("systemd-run", "--unit=keeper-leader", "--quiet", "sh", "-c", REGISTER_SELF).returncode == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "keeper" not in ct.run("machinectl", "list").stdout:
            time.sleep(0.1)
        assert ct.run("systemctl", "restart", "pymachined").returncode == 0
        assert "keeper" in ct.run("machinectl", "list").stdout

        # the watchdog keeps it alive: pings at half the interval, no restart
        ct.run("mkdir", "-p", "/run/systemd/system/pymachined.service.d")
        ct.sh("printf '[Service]\\nWatchdogSec=2s\\n' > /run/systemd/system/pymachined.service.d/wd.conf")
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "restart", "pymachined")
        time.sleep(5)
        after = show(ct, "pymachined.service", "ActiveState", "NRestarts", "WatchdogUSec", "Result")
        assert after == {"ActiveState": "active", "NRestarts": "0", "WatchdogUSec": "2s", "Result": "success"}

        # LogControl1 through busctl; the journal sees the levels
        path = ["org.freedesktop.machine1", "/org/freedesktop/LogControl1", "org.freedesktop.LogControl1"]
        assert ct.run("busctl", "set-property", *path, "LogLevel", "s", "debug").returncode == 0
        assert ct.run("busctl", "get-property", *path, "LogLevel").stdout == 's "debug"\n'
        assert "Serving org.freedesktop.machine1" in ct.journal("pymachined.service")
        errors = ct.run("journalctl", "--no-pager", "-b", "-u", "pymachined", "-p", "err", "-o", "cat").stdout
        assert "Traceback" not in errors and errors.strip() == "", errors

        # uninstall removes what install put there
        assert ct.run("/opt/pymachined-repo/scripts/uninstall").returncode == 0
        assert ct.run("test", "-e", unit).returncode == 1
        assert ct.run("test", "-e", "/etc/systemd/user/pymachined.service").returncode == 1
        assert ct.run("test", "-e", "/usr/local/share/dbus-1/services/org.freedesktop.machine1.service").returncode == 1


USER_ENV = "XDG_RUNTIME_DIR=/run/user/1000 DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus"
# What Debian's dbus-user-session and libpam-systemd would add for a user's systemd --user: its runtime
# directory in the environment, and a socket-activated session bus. Written at test time, so the shared image
# stays as the other booted tests expect it (with libpam-systemd in it, inner containers stop much more slowly).
SESSION_BUS_UNITS = """
mkdir -p /etc/systemd/system/user@.service.d
printf '[Service]\\nEnvironment=XDG_RUNTIME_DIR=/run/user/%%i\\n' > /etc/systemd/system/user@.service.d/runtime-dir.conf
systemctl daemon-reload
mkdir -p /etc/systemd/user/sockets.target.wants
cat > /etc/systemd/user/dbus.socket <<'UNIT'
[Unit]
Description=D-Bus User Message Bus Socket
[Socket]
ListenStream=%t/bus
ExecStartPost=-/usr/bin/systemctl --user set-environment DBUS_SESSION_BUS_ADDRESS=unix:path=%t/bus
[Install]
WantedBy=sockets.target
UNIT
cat > /etc/systemd/user/dbus.service <<'UNIT'
[Unit]
Description=D-Bus User Message Bus
Requires=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --session --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
UNIT
ln -sf ../dbus.socket /etc/systemd/user/sockets.target.wants/dbus.socket
"""
USER_MANAGER = "busctl --user call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager"


def test_user_instance_under_a_user_manager(tmp_path: Path) -> None:
    """make install's user unit, activated on a real user's session bus by its systemd --user: the user
    registers and creates machines of its own (scopes made by its user manager); the system sees none."""
    with booted_container(tmp_path, machined="pymachined") as ct:
        install = ct.run(
            "env", "PYMACHINED_VENV=/opt/pymachined-venv", "/opt/pymachined-repo/scripts/install", timeout=120
        )
        assert install.returncode == 0, install.output
        assert ct.sh(SESSION_BUS_UNITS).returncode == 0
        assert ct.sh("useradd -m -s /bin/sh alice && loginctl enable-linger alice").returncode == 0
        ct.wait_until("test -S /run/user/1000/bus", "alice's session bus")

        def alice(script: str):  # type: ignore[no-untyped-def]
            return ct.sh(f"runuser -u alice -- env {USER_ENV} sh -c {shlex.quote(script)}")

        # bus activation through the user manager
        assert alice(f"{USER_MANAGER} ListMachines").stdout == "a(ssso) 0\n"
        status = alice("systemctl --user show pymachined -p ActiveState -p StatusText").stdout
        assert "ActiveState=active" in status and "StatusText=Processing requests..." in status
        # RegisterMachine of a process in one of alice's units
        register = f"{USER_MANAGER} RegisterMachine sayssus mine 0 '' container $$$$ ''; exec sleep infinity"
        assert alice(f"systemd-run --user --unit=mine-leader --quiet sh -c {shlex.quote(register)}").returncode == 0
        ct.wait_until(f"runuser -u alice -- env {USER_ENV} {USER_MANAGER} ListMachines | grep -q mine", "mine")
        unit = alice(f"{USER_MANAGER} GetMachine s mine").stdout
        assert unit.strip() == 'o "/org/freedesktop/machine1/machine/mine"'
        # CreateMachine: alice's user manager makes the scope, under her user@.service
        assert alice("systemd-run --user --unit=holder --quiet sleep infinity").returncode == 0
        leader = alice("systemctl --user show holder -p MainPID --value").stdout.strip()
        created = alice(f"{USER_MANAGER} CreateMachine 'sayssusa(sv)' c2 0 '' container {leader} '' 0")
        assert created.stdout.strip() == 'o "/org/freedesktop/machine1/machine/c2"', created.output
        scope = alice("systemctl --user show machine-c2.scope -p ActiveState -p ControlGroup").stdout
        assert "ActiveState=active" in scope
        assert "ControlGroup=/user.slice/user-1000.slice/user@1000.service/machine.slice/machine-c2.scope" in scope
        assert alice(f"{USER_MANAGER} TerminateMachine s c2").returncode == 0
        ct.wait_until(
            f"runuser -u alice -- env {USER_ENV} systemctl --user show machine-c2.scope -p ActiveState "
            "| grep -q ActiveState=inactive",
            "machine-c2.scope to stop",
        )
        # the system instance knows nothing of alice's machines
        assert "No machines." in ct.run("machinectl", "list", "--no-pager").stdout
        assert ct.run("ls", "/run/user/1000/systemd/machines/mine").returncode == 0
        assert ct.run("ls", "/run/systemd/machines/mine").returncode != 0
