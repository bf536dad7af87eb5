"""The isolated system every test runs against: a private bus, one machined, leaders, clients.

Only valid inside tests/harness/isolate (private /run, own cgroup namespace).
The same scenario code drives pymachined and the real systemd-machined 252.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
HARNESS: Final = Path(__file__).resolve().parent
POLICY: Final = REPO / "data/dbus-1/system.d/org.freedesktop.machine1.conf"
BUS_SOCKET: Final = Path("/run/dbus/system_bus_socket")
BUS_ADDRESS: Final = f"unix:path={BUS_SOCKET}"
STATE_DIR: Final = Path("/run/systemd/machines")
MACHINED_252: Final = Path("/lib/systemd/systemd-machined")
BUS_NAME: Final = "org.freedesktop.machine1"


def cgroup_root() -> Path:
    unified = Path("/sys/fs/cgroup/unified")
    return unified if unified.is_dir() and os.path.ismount(unified) else Path("/sys/fs/cgroup")


def in_isolation() -> bool:
    """True inside tests/harness/isolate: /run is a private tmpfs and the cgroup root is ours."""
    return os.environ.get("PYMACHINED_ISOLATED") == "1" and os.path.ismount("/run")


def client_env() -> dict[str, str]:
    """The environment clients run in: the test bus, no pager, no colours, C.UTF-8, UTC."""
    env = dict(os.environ)
    env["DBUS_SYSTEM_BUS_ADDRESS"] = BUS_ADDRESS
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env["SYSTEMD_PAGER"] = ""
    env["SYSTEMD_COLORS"] = "0"
    env["LC_ALL"] = "C.UTF-8"
    env["TZ"] = "UTC"
    return env


@dataclass(frozen=True, slots=True)
class Implementation:
    """A machined to test: pymachined or the reference systemd-machined 252."""

    name: str
    argv: tuple[str, ...]

    @property
    def is_reference(self) -> bool:
        return self.name.startswith("machined")  # machined252, machined257


PYMACHINED: Final = Implementation("pymachined", (sys.executable, "-m", "pymachined"))
REFERENCE: Final = Implementation("machined252", (str(MACHINED_252),))
# systemd-machined 257 from the Debian 13 root (harness/trixie.py: call ensure_trixie_root() first).
REFERENCE_257: Final = Implementation("machined257", (str(HARNESS / "in-trixie"), "/usr/lib/systemd/systemd-machined"))


@dataclass(slots=True)
class Result:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass(slots=True)
class Leader:
    """A process parked in a unit-named cgroup, to be registered as a machine's leader."""

    pid: int
    cgroup: Path
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class System:
    """Bus + daemon + leaders for one test."""

    implementation: Implementation
    workdir: Path
    bus: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    leaders: list[Leader] = field(default_factory=list)
    cgroups: list[Path] = field(default_factory=list)
    daemon_log: Path | None = None
    daemon_args: list[str] = field(default_factory=list)
    polkit: subprocess.Popen[bytes] | None = None

    # bus and daemon

    def env(self) -> dict[str, str]:
        return client_env()

    def start_bus(self) -> None:
        config = self.workdir / "system-bus.conf"
        template = (HARNESS / "system-bus.conf.in").read_text()
        config.write_text(template.replace("@MACHINE1_POLICY@", str(POLICY)))
        BUS_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        (BUS_SOCKET.parent / "system-services").mkdir(exist_ok=True)
        if BUS_SOCKET.exists():
            BUS_SOCKET.unlink()
        self.bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
            stdin=subprocess.DEVNULL,
        )
        wait_for(lambda: BUS_SOCKET.exists(), "the test bus socket")

    def start_daemon(self, extra_env: dict[str, str] | None = None) -> None:
        assert self.daemon is None or self.daemon.poll() is not None, "daemon already running"
        env = self.env()
        env["SYSTEMD_LOG_LEVEL"] = "debug"
        env["SYSTEMD_LOG_TARGET"] = "console"
        env["PYTHONPATH"] = str(REPO / "src")
        if extra_env:
            env.update(extra_env)
        self.daemon_log = self.workdir / f"{self.implementation.name}.log"
        log = self.daemon_log.open("ab")
        argv = list(self.implementation.argv)
        if not self.implementation.is_reference:
            argv += self.daemon_args
        self.daemon = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_for(self._name_owned, f"{self.implementation.name} to own {BUS_NAME}", process=self.daemon)

    def _name_owned(self) -> bool:
        return self._has_owner(BUS_NAME)

    def stop_daemon(self, signum: int = signal.SIGTERM) -> int:
        assert self.daemon is not None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signum)
            try:
                self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        wait_for(lambda: not self._name_owned(), f"{BUS_NAME} to be released")
        return self.daemon.returncode

    def start_polkit(self, rules: str = "") -> None:
        """A real polkitd on the test bus, reading pymachined's actions and only the given rules (JavaScript)."""
        base = Path("/run/pymachined-test-polkit")
        actions, rules_dir = base / "actions", base / "rules.d"
        for directory in (actions, rules_dir):  # emptied in place: they may be bind-mounted already
            directory.mkdir(parents=True, exist_ok=True)
            for entry in directory.iterdir():
                entry.unlink()
        shutil.copy(REPO / "data/polkit-1/actions/org.freedesktop.machine1.policy", actions)
        if rules:
            (rules_dir / "50-test.rules").write_text(rules)
        for private, public in ((actions, "/usr/share/polkit-1/actions"), (rules_dir, "/etc/polkit-1/rules.d")):
            if not os.path.ismount(public):
                subprocess.run(["mount", "-n", "--bind", str(private), public], check=True)
        self.polkit = subprocess.Popen(
            ["/usr/lib/polkit-1/polkitd", "--no-debug"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: self._has_owner("org.freedesktop.PolicyKit1"), "polkitd", process=self.polkit)

    def stop_polkit(self) -> None:
        if self.polkit is not None and self.polkit.poll() is None:
            self.polkit.terminate()
            self.polkit.wait()
        wait_for(lambda: not self._has_owner("org.freedesktop.PolicyKit1"), "polkitd to leave the bus")

    def _has_owner(self, name: str) -> bool:
        result = self.run(
            "busctl",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
        )
        return result.stdout.strip() == "b true"

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def log_text(self) -> str:
        return self.daemon_log.read_text(errors="replace") if self.daemon_log else ""

    # clients

    def run(self, *argv: str, input: str | None = None, timeout: float = 30) -> Result:
        proc = subprocess.run(list(argv), env=self.env(), input=input, capture_output=True, text=True, timeout=timeout)
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    def busctl(self, *argv: str) -> Result:
        return self.run("busctl", *argv)

    def manager_call(
        self, method: str, signature: str = "", *values: object, options: Sequence[str] = (), timeout: float = 30
    ) -> Result:
        """busctl [options] call … Manager method; `timeout` bounds the busctl process."""
        call = ["busctl", *options, "call", BUS_NAME, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
        call.append(method)
        if signature:
            call.append(signature)
        return self.run(*call, *(str(v) for v in values), timeout=timeout)

    def gdbus(self, object_path: str, method: str, *values: str) -> Result:
        return self.run(
            "gdbus", "call", "--system", "--dest", BUS_NAME, "--object-path", object_path, "--method", method, *values
        )

    def machinectl(self, *argv: str) -> Result:
        return self.run("machinectl", "--no-pager", *argv)

    # leaders

    def make_cgroup(self, relative: str) -> Path:
        path = cgroup_root() / relative
        path.mkdir(parents=True, exist_ok=True)
        self.cgroups.append(path)
        return path

    def spawn_leader(self, unit: str = "machine-foo.scope", slice_: str = "machine.slice") -> Leader:
        """`sleep` moved into <slice>/<unit> before it is handed out."""
        cgroup = self.make_cgroup(f"{slice_}/{unit}" if slice_ else unit)
        process = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL)
        (cgroup / "cgroup.procs").write_text(str(process.pid))
        leader = Leader(process.pid, cgroup, process)
        self.leaders.append(leader)
        return leader

    def spawn_in(self, unit: str, argv: list[str], slice_: str = "machine.slice") -> Leader:
        """Any command as a leader, moved into <slice>/<unit> once it runs."""
        cgroup = self.make_cgroup(f"{slice_}/{unit}" if slice_ else unit)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_default_signals)
        (cgroup / "cgroup.procs").write_text(str(process.pid))
        leader = Leader(process.pid, cgroup, process)
        self.leaders.append(leader)
        return leader

    def userns_leader(self, unit: str, uid_map: str = "0 100000 65536", gid_map: str | None = None) -> Leader:
        """A leader in a user namespace of its own, with the given map written from outside."""
        leader = self.spawn_in(unit, ["unshare", "--user", "sleep", "infinity"])
        wait_for(lambda: _userns_differs(leader.pid), "the leader to enter its user namespace")
        Path(f"/proc/{leader.pid}/uid_map").write_text(uid_map.replace(";", "\n") + "\n")
        Path(f"/proc/{leader.pid}/gid_map").write_text((gid_map or uid_map).replace(";", "\n") + "\n")
        return leader

    def chroot_leader(self, unit: str, root: Path, own_mount_namespace: bool = True) -> Leader:
        """A leader whose root directory is `root`, in a mount namespace of its own as containers are."""
        chroot = ["chroot", str(root), "/bin/sleep", "1000000"]
        if own_mount_namespace:
            # a mount namespace with /proc mounted in the root, as a container has
            script = f"mount -t proc proc {root}/proc && exec {shlex.join(chroot)}"
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        else:
            argv = chroot
        leader = self.spawn_in(unit, argv)
        wait_for(lambda: os.path.exists(f"/proc/{leader.pid}/root/bin/busybox"), "the leader to enter its root")
        return leader

    def container_leader(self, unit: str, root: Path) -> Leader:
        """A leader as a container's: its own mount namespace pivoted into `root`, /proc, its own devpts."""
        from .rootfs import CONTAINER_INIT

        leader = self.spawn_in(unit, ["unshare", "--mount", "sh", "-c", CONTAINER_INIT, "sh", str(root)])
        wait_for(lambda: (root / "run/ready").exists() and _comm(leader.pid) == "sleep", "the container leader")
        return leader

    def spawn_process(self, argv: list[str]) -> Leader:
        """A process left where the test runs (the namespace's root cgroup), e.g. for CreateMachine."""
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=self.env(), preexec_fn=_default_signals)
        leader = Leader(process.pid, cgroup_root(), process)
        self.leaders.append(leader)
        return leader

    def trapping_leader(self, marker_dir: Path, ignore_term: bool = False) -> Leader:
        """A shell that writes a marker file per signal it receives (as systemd's TEST-13 leaders)."""
        traps = " ".join(
            f"trap 'echo {sig} >> {marker_dir}/signals' {sig};" for sig in ("USR1", "USR2", "INT", "HUP", "RTMIN+4")
        )
        term = (
            "trap 'echo TERM >> {d}/signals' TERM;" if ignore_term else "trap 'echo TERM >> {d}/signals; exit 0' TERM;"
        )
        script = f"{traps} {term.format(d=marker_dir)} echo ready > {marker_dir}/ready; while :; do sleep 0.05; done"
        leader = self.spawn_process(["bash", "-c", script])
        wait_for(lambda: (marker_dir / "ready").exists(), "the trapping leader to install its traps")
        return leader

    def register(
        self,
        name: str,
        leader: Leader | int,
        machine_class: str = "container",
        service: str = "",
        root: str = "",
        machine_id: str = "0",
        ifindices: Sequence[int] | None = None,
    ) -> Result:
        pid = leader.pid if isinstance(leader, Leader) else leader
        id_args = machine_id.split()
        if ifindices is None:
            return self.manager_call("RegisterMachine", "sayssus", name, *id_args, service, machine_class, pid, root)
        return self.manager_call(
            "RegisterMachineWithNetwork",
            "sayssusai",
            name,
            *id_args,
            service,
            machine_class,
            pid,
            root,
            len(ifindices),
            *ifindices,
        )

    # teardown

    def close(self) -> None:
        for leader in self.leaders:
            leader.kill()
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        if self.polkit is not None and self.polkit.poll() is None:
            self.polkit.terminate()
            self.polkit.wait()
        for public in ("/usr/share/polkit-1/actions", "/etc/polkit-1/rules.d"):
            if os.path.ismount(public):
                subprocess.run(["umount", "-n", public], check=False)
        if self.bus is not None and self.bus.poll() is None:
            self.bus.terminate()
            self.bus.wait()
        # everything below the namespace's cgroup root: leaders, containers, scopes a daemon made
        below = sorted((p for p in cgroup_root().rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for path in below:
            kill_cgroup(path)
        for path in below:
            try:
                path.rmdir()
            except OSError:
                pass
        reset_runtime_state()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _userns_differs(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user") and (
            Path(f"/proc/{pid}/comm").read_text().strip() == "sleep"
        )
    except OSError:
        return False


def _default_signals() -> None:
    """Undo the SIGINT/SIGQUIT the harness inherited ignored (a background job of a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def kill_cgroup(path: Path) -> None:
    try:
        pids = (path / "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not (path / "cgroup.procs").read_text().strip(), f"{path} to empty", timeout=5)


IMAGE_DIRS: Final = (
    "/etc/machines",
    "/run/machines",
    "/var/lib/machines",
    "/var/lib/container",
    "/usr/local/lib/machines",
    "/usr/lib/machines",
)


def reset_runtime_state() -> None:
    """Forget what a daemon or a test left in the private /run and image directories."""
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if in_isolation():  # these are private mounts only inside tests/harness/isolate
        for directory in map(Path, IMAGE_DIRS):
            if not directory.is_dir():
                continue
            entries = [str(e) for e in directory.iterdir()]
            if entries:
                subprocess.run(["chattr", "-R", "-i", *entries], capture_output=True, check=False)
                subprocess.run(["rm", "-rf", "--one-file-system", *entries], capture_output=True, check=False)
    userdb = Path("/run/systemd/userdb")
    if userdb.is_dir():
        for entry in userdb.iterdir():
            entry.unlink()


def wait_for(predicate, what: str, timeout: float = 15, process: subprocess.Popen[bytes] | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} while waiting for {what}")
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@contextmanager
def system(implementation: Implementation, workdir: Path, start: bool = True) -> Iterator[System]:
    reset_runtime_state()
    sys_ = System(implementation, workdir)
    try:
        sys_.start_bus()
        if start:
            sys_.start_daemon()
        yield sys_
    finally:
        sys_.close()


# normalisation for comparing the two implementations

_PATTERNS: Final = [
    (re.compile(r":1\.\d+"), ":1.N"),
    (re.compile(r"\b\d{16}\b"), "<usec>"),
    (re.compile(r"(Timestamp=|Since: ).*"), r"\1<time>"),
    (re.compile(r"(TimestampMonotonic=)\d+"), r"\1<usec>"),
]


def normalise(text: str, pids: Sequence[int] = ()) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for i, pid in enumerate(sorted(set(pids), reverse=True)):
        text = re.sub(rf"\b{pid}\b", f"<pid{i}>", text)
    return text
