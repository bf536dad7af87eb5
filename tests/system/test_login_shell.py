"""machinectl shell/login and systemd-run -M into a booted container registered with the machined under test.

The container (Debian 12, real systemd) is booted by systemd-nspawn --register=yes, which registers it
with the daemon on the test's bus; that daemon then reaches the container's own systemd. The same
scenario runs with systemd-machined 252 as the daemon, and the client output must be the same.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.booted import booted_container
from harness.differential import Transcript, _compare
from harness.markers import needs_nspawn
from harness.system import PYMACHINED, REFERENCE, Implementation, System, system, wait_for

pytestmark = [
    pytest.mark.slow,
    needs_nspawn,
]


def in_terminal(s: System, command: str, seconds: float = 20) -> str:
    """Run a client that wants a terminal under script(1); what it printed, line ends normalised."""
    result = s.run("timeout", str(seconds), "script", "-qec", command, "/dev/null", timeout=seconds + 10)
    return result.stdout.replace("\r\n", "\n")


def scenario(implementation: Implementation, workdir: Path) -> list[tuple[str, str]]:
    workdir.mkdir(parents=True)
    with system(implementation, workdir) as s:
        (workdir / "ct").mkdir()
        with booted_container(workdir / "ct", register=True) as ct:
            wait_for(lambda: s.machinectl("show", "booted").returncode == 0, "the container to register")
            t = Transcript(s)
            t.leaders.append(int(s.machinectl("show", "-p", "Leader", "--value", "booted").stdout))
            t.machinectl("list")
            t.machinectl("shell", "-q", "booted", "/bin/sh", "-c", "echo $((7+8))")
            t.machinectl("shell", "-q", "--setenv=FOO=bar", "booted", "/bin/sh", "-c", "echo $FOO")
            t.machinectl("shell", "-q", "--uid=nobody", "booted", "/usr/bin/id", "-un")
            t.machinectl("shell", "-q", "booted", "/bin/sh", "-c", "tty; echo $TERM")
            t.machinectl("shell", "-q", "nouser@booted", "/bin/true")
            t.machinectl("shell", "-q", "booted", "relative/path")
            # Without systemd on this outer side, systemd-run 252 -M -t gets its PTY (OpenMachinePTY
            # answers) and then exits 1 without a word, with either daemon: compared, not asserted here.
            # With an outer systemd it works: tests/system/test_nested_clients.py.
            t.note("systemd-run -M -t", in_terminal(s, "systemd-run -q -M booted --wait -t /bin/true; echo rc=$?"))
            t.run("systemd-run", "-q", "-M", "booted", "--wait", "/bin/true")
            login = in_terminal(s, "machinectl login booted", seconds=6)
            t.note("machinectl login reaches a getty", str("booted login:" in login))
            # the getty ran as container-getty@N.service of the container's systemd
            started = ct.run("journalctl", "--no-pager", "-b", "-o", "cat", "-u", "container-getty@*")
            t.note("getty started inside", str("Started container-getty@" in started.stdout))
            time.sleep(0.2)
            return t.steps


def test_shell_login_systemd_run(tmp_path: Path) -> None:
    ours = scenario(PYMACHINED, tmp_path / "pymachined")
    reference = scenario(REFERENCE, tmp_path / "machined252")
    steps = dict(_compare(ours, reference))
    assert steps["machinectl --no-pager shell -q booted /bin/sh -c echo $((7+8))"].startswith("rc=0\n--- stdout\n15\n")
    assert "bar" in steps["machinectl --no-pager shell -q --setenv=FOO=bar booted /bin/sh -c echo $FOO"]
    assert steps["machinectl login reaches a getty"] == "True"
    assert steps["getty started inside"] == "True"
