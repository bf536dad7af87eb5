"""A per-user pymachined (`pymachined --user`) for uid 65534, beside the system instance of a test.

The user gets /run/user/65534 (0700, its own), a session dbus-daemon on /run/user/65534/bus, and a
pymachined --user run by the system's python3 with the repository's sources and the venv's packages
on PYTHONPATH (the venv's own interpreter lives under /root, which the user cannot enter).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from .system import REPO, Leader, Result, System, wait_for
from .varlink_raw import raw_call_as

UID: Final = 65534
RUNTIME: Final = Path(f"/run/user/{UID}")
HOME: Final = RUNTIME / "home"
SESSION_BUS: Final = RUNTIME / "bus"
AS_USER: Final = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]
SYSTEM_PYTHON: Final = Path("/usr/bin/python3")

SESSION_CONFIG: Final = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={SESSION_BUS}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def system_python_problem() -> str | None:
    """Why the system's python3 cannot run pymachined from this venv, or None."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} is missing"
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version != ours:
        return f"{SYSTEM_PYTHON} is Python {version}, the venv's packages are built for {ours}"
    return None


@dataclass
class UserInstance:
    """The user's session bus and pymachined --user, and commands run as the user."""

    system: System
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log: Path | None = None

    def env(self) -> dict[str, str]:
        site = sysconfig.get_paths()["purelib"]
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(HOME),
            "XDG_RUNTIME_DIR": str(RUNTIME),
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={SESSION_BUS}",
            "PYTHONPATH": f"{REPO / 'src'}:{site}",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "SYSTEMD_LOG_LEVEL": "debug",
            "SYSTEMD_LOG_TARGET": "console",
        }

    def start(self) -> None:
        RUNTIME.mkdir(mode=0o700, parents=True, exist_ok=True)
        HOME.mkdir(mode=0o700, exist_ok=True)
        config = RUNTIME / "session.conf"
        config.write_text(SESSION_CONFIG)
        for path in (RUNTIME, HOME, config):
            os.chown(path, UID, UID)
        self.processes.append(
            subprocess.Popen([*AS_USER, "dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"])
        )
        wait_for(SESSION_BUS.exists, "the session bus socket")
        self.log = self.system.workdir / "pymachined-user.log"
        with self.log.open("ab") as log:
            daemon = subprocess.Popen(
                [*AS_USER, str(SYSTEM_PYTHON), "-m", "pymachined", "--user"],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.processes.append(daemon)
        wait_for(self.name_owned, "pymachined --user to own org.freedesktop.machine1", process=daemon)

    def name_owned(self) -> bool:
        result = self.run("busctl", "--user", "status", "org.freedesktop.machine1")
        return result.returncode == 0

    def run(self, *argv: str, timeout: float = 30) -> Result:
        """A command as the user, in the user's environment."""
        proc = subprocess.run([*AS_USER, *argv], env=self.env(), capture_output=True, text=True, timeout=timeout)
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    def manager_call(self, method: str, signature: str = "", *values: object) -> Result:
        argv = ["busctl", "--user", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1"]
        argv += ["org.freedesktop.machine1.Manager", method]
        if signature:
            argv += [signature, *(str(v) for v in values)]
        return self.run(*argv)

    def varlink(self, method: str, parameters: dict[str, object]) -> str:
        """A raw call on the user's io.systemd.Machine socket, made by the user."""
        socket = str(RUNTIME / "systemd/machine/io.systemd.Machine")
        return raw_call_as(socket, {"method": method, "parameters": parameters}, AS_USER, self.env())

    def leader(self, unit: str) -> Leader:
        """A process of the user's, parked in machine.slice/<unit> (a cgroup handed to the user)."""
        cgroup = self.system.make_cgroup(f"machine.slice/{unit}")
        for path in (cgroup, *(cgroup / name for name in ("cgroup.procs", "cgroup.kill") if (cgroup / name).exists())):
            os.chown(path, UID, UID)
        process = subprocess.Popen([*AS_USER, "sleep", "infinity"], stdin=subprocess.DEVNULL)
        (cgroup / "cgroup.procs").write_text(str(process.pid))
        leader = Leader(process.pid, cgroup, process)
        self.system.leaders.append(leader)
        return leader

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        subprocess.run(["rm", "-rf", str(RUNTIME)], check=False)
