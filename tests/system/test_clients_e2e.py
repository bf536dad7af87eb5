"""The clients the systemd-machined man page names, against a booted container registered with the daemon.

The outer side is this VM (no systemd as PID 1) with the daemon under test on the test bus; the
container (Debian 12, systemd inside) is booted by systemd-nspawn --register=yes --network-veth.
The same commands run with systemd-machined 252 as the daemon; the outputs must be the same.
Clients that ask the outer systemd (systemd-cgls -M, the cgroup tree in machinectl status,
systemctl list-machines) meet no systemd out here, with either daemon: compared, not asserted; so is
`getent hosts booted`, as nothing configures the container's host0 (no networkd inside).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from harness.booted import booted_container
from harness.differential import Transcript, _compare
from harness.markers import needs_nspawn
from harness.system import PYMACHINED, REFERENCE, STATE_DIR, Implementation, system, wait_for

pytestmark = [pytest.mark.slow, needs_nspawn]

CLIENTS = [
    ["systemctl", "-M", "booted", "is-system-running"],
    ["systemctl", "-M", "booted", "list-units", "--no-legend", "--plain", "systemd-logind.service"],
    ["hostnamectl", "-M", "booted", "hostname"],
    ["timedatectl", "-M", "booted", "show", "-p", "Timezone", "-p", "NTP"],
    ["localectl", "-M", "booted", "status"],
    ["loginctl", "-M", "booted", "list-seats", "--no-legend"],
    [
        "busctl",
        "-M",
        "booted",
        "get-property",
        "org.freedesktop.hostname1",
        "/org/freedesktop/hostname1",
        "org.freedesktop.hostname1",
        "Hostname",
    ],
    ["machinectl", "-M", "booted", "list"],
    ["journalctl", "-M", "booted", "-n", "1", "-o", "cat", "--no-pager", "-u", "systemd-logind"],
    ["systemd-run", "-M", "booted", "--wait", "-q", "/bin/true"],
    ["systemd-cgls", "-M", "booted", "--no-pager"],
    ["systemctl", "list-machines", "--no-legend"],
    ["getent", "hosts", "booted"],
]


def scenario(implementation: Implementation, workdir: Path) -> list[tuple[str, str]]:
    workdir.mkdir(parents=True)
    with system(implementation, workdir) as s:
        (workdir / "ct").mkdir()
        with booted_container(workdir / "ct", register=True, nspawn_args=["--network-veth"]) as ct:
            wait_for(lambda: s.machinectl("show", "booted").returncode == 0, "the container to register")
            t = Transcript(s)
            leader = int(s.machinectl("show", "-p", "Leader", "--value", "booted").stdout)
            t.leaders.append(leader)
            # per boot: the container's machine ID, the link-local address, the harness's unit name
            t.extra_patterns += [
                (re.compile(r"fe80::[0-9a-f:]+"), "fe80::<link-local>"),
                (re.compile(r"\b[0-9a-f]{32}\b"), "<machine-id>"),
                (re.compile(r"boot-booted-[0-9a-f]{6}\.service"), "boot-booted-<random>.service"),
            ]
            for argv in CLIENTS:
                t.run(*argv)
            # give the container's end of the veth an address: nss-mymachines finds it through the daemon
            ct.run("ip", "link", "set", "host0", "up")
            ct.run("ip", "addr", "add", "192.0.2.77/24", "dev", "host0")
            t.run("getent", "ahostsv4", "booted")
            t.run("ps", "-o", "machine=,comm=", "-p", str(leader))
            t.machinectl("status", "booted", "--no-pager", "--lines=0")
            t.machinectl("poweroff", "booted")
            try:
                ct.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            t.note("container powered off", str(ct.nspawn.poll() is not None))
            wait_for(lambda: not (STATE_DIR / "booted").exists(), "nspawn to unregister the container")
            t.machinectl("list")
            return t.steps


def test_clients_reach_the_container(tmp_path: Path) -> None:
    ours = scenario(PYMACHINED, tmp_path / "pymachined")
    reference = scenario(REFERENCE, tmp_path / "machined252")
    steps = dict(_compare(ours, reference))
    assert steps["systemctl -M booted is-system-running"] == "rc=0\n--- stdout\nrunning\n--- stderr\n"
    assert steps["hostnamectl -M booted hostname"].startswith("rc=0\n--- stdout\nbooted\n")
    assert "Started systemd-logind.service" in steps["journalctl -M booted -n 1 -o cat --no-pager -u systemd-logind"]
    assert steps["container powered off"] == "True"
    assert "192.0.2.77" in steps["getent ahostsv4 booted"]
    ps = steps[next(k for k in steps if k.startswith("ps -o machine="))]
    assert ps.split("\n")[2].split() == ["booted", "systemd"]
