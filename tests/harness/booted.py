"""The booted-container tier: a Debian 12 root with a real systemd, booted by systemd-nspawn -b.

Inside, D-Bus activation of org.freedesktop.machine1 starts pymachined (from this repo's src/, bind-mounted
read-only at /opt/pymachined-src) or, with machined="machined252", the real systemd-machined 252 of the image.
Only valid inside tests/harness/isolate. See BOOTED.md.

    with booted_container(tmp_path, machined="pymachined") as ct:
        ct.run("machinectl", "list")
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from harness.system import REPO, Result, cgroup_root, in_isolation, wait_for

HARNESS: Final = Path(__file__).resolve().parent
BUILD_SCRIPT: Final = HARNESS / "build-debian-root"
MACHINEDS: Final = ("pymachined", "machined252")
# Unit that D-Bus activation starts for each choice (the other one stays inactive).
MACHINED_UNIT: Final = {"pymachined": "pymachined.service", "machined252": "systemd-machined.service"}
INSIDE_ENV: Final = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "TERM": "dumb",
    "TZ": "UTC",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


def ensure_root() -> Path:
    """Build the cached Debian root if it is missing or stale (about a minute); return its path."""
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class Container:
    name: str
    machined: str  # "pymachined" or "machined252"
    root: Path  # the merged overlay, as seen from outside
    cgroup: Path  # the unit-named cgroup nspawn runs in
    console_log: Path
    nspawn: subprocess.Popen[bytes]
    pid1: int = 0
    boot_seconds: float = 0.0
    failed_units: list[str] = field(default_factory=list)

    def run(self, *argv: str, input: str | None = None, timeout: float = 60) -> Result:
        """Run argv inside all of the container's namespaces (the process stays in our cgroup)."""
        enter = ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-C", "--"]
        proc = subprocess.run(
            [*enter, *argv], env=INSIDE_ENV, input=input, capture_output=True, text=True, timeout=timeout
        )
        return Result(argv, proc.returncode, proc.stdout, proc.stderr)

    def sh(self, script: str, timeout: float = 60) -> Result:
        return self.run("sh", "-c", script, timeout=timeout)

    def journal(self, unit: str | None = None) -> str:
        return self.run("journalctl", "--no-pager", "-b", *(["-u", unit] if unit else [])).output

    def console(self) -> str:
        return self.console_log.read_text(errors="replace")

    def wait_booted(self, timeout: float = 120) -> str:
        """`systemctl is-system-running --wait`: "running", or "degraded" (failed units are recorded)."""
        start = time.monotonic()
        deadline = start + timeout
        while True:  # retried while systemd is not up yet: "" (no socket) or "offline" (no /run/systemd/system)
            r = self.run("systemctl", "is-system-running", "--wait", timeout=max(1.0, deadline - time.monotonic()))
            state = r.stdout.strip()
            if state not in ("", "offline") or time.monotonic() > deadline or self.nspawn.poll() is not None:
                break
            time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise RuntimeError(
                f"container {self.name} is {state!r} ({r.stderr.strip()}); console:\n{self.console()[-3000:]}"
            )
        failed = self.run("systemctl", "--failed", "--plain", "--no-legend").stdout
        self.failed_units = [line.split()[0] for line in failed.splitlines() if line.strip()]
        if state == "degraded":
            print(f"booted: {self.name} is degraded, failed units: {self.failed_units}")
        self.boot_seconds += time.monotonic() - start
        return state

    def wait_until(self, script: str, what: str, timeout: float = 30) -> None:
        """Until `script` succeeds inside the container."""
        wait_for(lambda: self.sh(script).returncode == 0, what, timeout)

    def wait_for_unit(self, unit: str, state: str = "active", timeout: float = 30) -> None:
        wait_for(lambda: self.run("systemctl", "is-active", unit).stdout.strip() == state, f"{unit} {state}", timeout)


def _find_pid1(cgroup: Path) -> int:
    """The process in nspawn's cgroup subtree that is PID 1 of its own PID namespace, once it has exec'd systemd.

    Before the exec it is still nspawn's inner child, setting up the namespaces we would enter.
    """
    for procs in cgroup.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
            if len(nspid) == 2 and nspid[1] == "1" and status.startswith("Name:\tsystemd\n"):
                return int(pid)
    return 0


def _kill_and_remove(cgroup: Path) -> None:
    if not cgroup.exists():
        return
    kill = cgroup / "cgroup.kill"
    for _ in range(100):
        if not any(p.read_text().strip() for p in cgroup.rglob("cgroup.procs")):
            break
        if kill.exists():
            kill.write_text("1")
        else:
            for procs in cgroup.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(0.05)
    for path in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        path.rmdir()
    cgroup.rmdir()


def _mount(*argv: str) -> None:
    subprocess.run(["mount", "-n", *argv], check=True)


@contextmanager
def booted_container(
    workdir: Path,
    machined: str = "pymachined",
    name: str = "booted",
    root: Path | None = None,
    nspawn_args: Sequence[str] = (),
    boot_timeout: float = 120,
    register: bool = False,
) -> Iterator[Container]:
    """Boot the cached Debian root (read-only lower layer of a tmpfs-backed overlay) with systemd inside.

    With `register`, nspawn registers the container with the machined on the test's own bus
    (RegisterMachine, --keep-unit), so that daemon's OpenLogin/OpenShell/… reach this systemd.
    """
    assert in_isolation(), "booted containers only run inside tests/harness/isolate"
    assert machined in MACHINEDS, machined
    lower = root or ensure_root()
    with ExitStack() as stack:
        ovl = workdir / "overlay"
        ovl.mkdir(parents=True)
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(ovl))
        stack.callback(subprocess.run, ["umount", "-n", "-l", str(ovl)], check=False)
        for sub in ("upper", "work", "merged"):
            (ovl / sub).mkdir()
        merged = ovl / "merged"
        layers = f"lowerdir={lower},upperdir={ovl}/upper,workdir={ovl}/work"
        _mount("-t", "overlay", "-o", layers, "overlay", str(merged))
        stack.callback(subprocess.run, ["umount", "-n", "-l", str(merged)], check=False)

        # systemd-nspawn --keep-unit uses the cgroup it runs in as the container's unit; it must look like a unit.
        cgroup = cgroup_root() / "system.slice" / f"boot-{name}-{secrets.token_hex(3)}.service"
        cgroup.mkdir(parents=True)
        stack.callback(_kill_and_remove, cgroup)
        argv = [
            "systemd-nspawn", "--boot", "--keep-unit", f"--register={'yes' if register else 'no'}", "--private-network",
            "--console=read-only", "--directory", str(merged), "--machine", name,
            f"--bind-ro={REPO / 'src'}:/opt/pymachined-src", f"--bind-ro={REPO}:/opt/pymachined-repo", *nspawn_args,
            f"pymachined.machined={machined}",  # init argument, read by the image's generator
        ]  # fmt: skip
        console_log = workdir / "console.log"
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with console_log.open("wb") as log:
            nspawn = subprocess.Popen(
                ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        ct = Container(name, machined, merged, cgroup, console_log, nspawn)
        stack.callback(_power_off, ct)

        start = time.monotonic()
        wait_for(lambda: bool(_find_pid1(cgroup)), "the container's PID 1", timeout=30, process=nspawn)
        ct.pid1 = _find_pid1(cgroup)
        ct.boot_seconds = time.monotonic() - start
        ct.wait_booted(timeout=boot_timeout)
        yield ct


def _power_off(ct: Container, timeout: float = 30) -> None:
    """SIGTERM to nspawn = orderly shutdown (it sends SIGRTMIN+3 to the container's systemd); SIGKILL after timeout."""
    if ct.nspawn.poll() is None:
        ct.nspawn.terminate()
        try:
            ct.nspawn.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            ct.nspawn.kill()
            ct.nspawn.wait()


def main() -> int:
    """Interactive debugging: boot, open a shell inside, power off when it exits.

    tests/harness/isolate env PYTHONPATH=tests .venv/bin/python -m harness.booted [pymachined|machined252]
    """
    import sys
    import tempfile

    machined = sys.argv[1] if len(sys.argv) > 1 else "pymachined"
    with tempfile.TemporaryDirectory(prefix="booted.") as tmp, booted_container(Path(tmp), machined) as ct:
        print(f"booted in {ct.boot_seconds:.1f}s, PID 1 = {ct.pid1}, failed units: {ct.failed_units or 'none'}")
        print(f"console log: {ct.console_log}; exit the shell to power off")
        enter = ["nsenter", "-t", str(ct.pid1), "-m", "-u", "-i", "-n", "-p", "-C", "--", "bash", "-l"]
        env = {**INSIDE_ENV, "TERM": os.environ.get("TERM", "dumb")}
        try:  # isolate runs us as a background job, whose stdin is /dev/null: talk to the terminal directly
            with open("/dev/tty", "r+b", buffering=0) as tty:
                return subprocess.call(enter, env=env, stdin=tty, stdout=tty, stderr=tty)
        except OSError:
            return subprocess.call(enter, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
