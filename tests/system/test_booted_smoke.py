"""Booted-container tier smoke test: a real systemd bus-activates machined inside a Debian 12 container.

The same image runs pymachined (from this repo's src/) or the real systemd-machined 252.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.booted import MACHINED_UNIT, MACHINEDS, Container, booted_container, ensure_root
from harness.markers import needs_nspawn
from harness.system import wait_for

pytestmark = [
    pytest.mark.slow,
    needs_nspawn,
]

MANAGER = ("org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager")
# A transient service whose own process registers itself as the leader of machine "foo", then stays.
# ($$$$: systemd turns "$$" in ExecStart= into "$", the shell then sees "$$".)
SELF_REGISTER = (
    "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 org.freedesktop.machine1.Manager "
    'RegisterMachine sayssus foo 0 "" container $$$$ /srv/foo && exec sleep infinity'
)


@pytest.fixture(scope="session")
def debian_root() -> Path:
    """Built by tests/harness/build-debian-root on first use (cached under /var/cache/pymachined-tests)."""
    return ensure_root()


@pytest.fixture(params=MACHINEDS)
def ct(request: pytest.FixtureRequest, debian_root: Path, tmp_path: Path) -> Iterator[Container]:
    with booted_container(tmp_path, machined=request.param, root=debian_root) as container:
        print(f"{request.param}: booted in {container.boot_seconds:.1f}s, failed units: {container.failed_units}")
        yield container


def ok(result_output: str, returncode: int) -> None:
    assert returncode == 0, result_output


def test_machined_is_bus_activated_and_registers(ct: Container) -> None:
    unit = MACHINED_UNIT[ct.machined]
    (other,) = (u for name, u in MACHINED_UNIT.items() if name != ct.machined)
    assert ct.run("cat", "/run/pymachined-selected").stdout.strip() == ct.machined

    # Nothing has asked for org.freedesktop.machine1 yet: the first client activates it through systemd.
    r = ct.run("machinectl", "list", "--no-legend")
    ok(r.output, r.returncode)
    assert r.stdout.strip() == ""
    ct.wait_for_unit(unit)
    status = ct.run("systemctl", "status", "--no-pager", "dbus-org.freedesktop.machine1.service")
    assert f"● {unit}" in status.stdout and "Active: active (running)" in status.stdout, status.output
    assert ct.run("systemctl", "is-active", other).stdout.strip() == "inactive"
    assert unit not in ct.failed_units

    r = ct.run("busctl", "get-property", *MANAGER, "PoolPath")
    assert r.stdout.strip() == 's "/var/lib/machines"', r.output

    # A transient unit's main process registers itself; machined files it under that unit.
    r = ct.run("systemd-run", "--unit=foo-leader", "--slice=machine.slice", "--property=Type=exec",
               "/bin/sh", "-c", SELF_REGISTER)  # fmt: skip
    ok(r.output, r.returncode)
    try:
        wait_for(lambda: "foo" in ct.run("machinectl", "list", "--no-legend").stdout.split(), "foo in machinectl list")
    except TimeoutError:
        pytest.fail(ct.journal("foo-leader.service") + ct.journal(unit))
    leader = ct.run("systemctl", "show", "-P", "MainPID", "foo-leader.service").stdout.strip()
    show = ct.run("machinectl", "show", "foo", "-p", "Name", "-p", "Class", "-p", "Unit", "-p", "Leader",
                  "-p", "RootDirectory", "-p", "State")  # fmt: skip
    assert dict(line.split("=", 1) for line in show.stdout.splitlines()) == {
        "Name": "foo", "Class": "container", "Unit": "foo-leader.service", "Leader": leader,
        "RootDirectory": "/srv/foo", "State": "running",
    }, show.output  # fmt: skip

    r = ct.run("busctl", "call", *MANAGER, "UnregisterMachine", "s", "foo")
    ok(r.output, r.returncode)
    assert ct.run("machinectl", "list", "--no-legend").stdout.strip() == ""

    journal = ct.journal(unit)
    assert "Traceback" not in journal, journal
