"""A real systemd-nspawn container registers itself and unregisters when it exits."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.markers import needs_nspawn
from harness.rootfs import busybox_root
from harness.system import STATE_DIR, System, wait_for

PAYLOAD = "while [ ! -e /stop ]; do sleep 0.1; done"


def start_nspawn(s: System, root: Path, name: str) -> subprocess.Popen[bytes]:
    """nspawn --keep-unit must itself run in a unit-named cgroup; its unit becomes the machine's."""
    cgroup = s.make_cgroup(f"system.slice/{name}-nspawn.service")
    script = (
        f"echo $$ > {cgroup}/cgroup.procs && exec systemd-nspawn --quiet --keep-unit --register=yes "
        f"-D {root} -M {name} /bin/sh -c '{PAYLOAD}'"
    )
    return subprocess.Popen(
        ["sh", "-c", script], env=s.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@needs_nspawn
def test_nspawn_registers_and_unregisters(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        root = busybox_root(s.workdir / "root")
        nspawn = start_nspawn(s, root, "bbtest")
        try:
            wait_for(lambda: (STATE_DIR / "bbtest").exists(), "nspawn to register bbtest", process=nspawn)
            leader = int(s.machinectl("show", "-p", "Leader", "--value", "bbtest").stdout)
            t.leaders.append(leader)
            listing = t.machinectl("list")
            row = listing.stdout.splitlines()[1].split()
            assert row == ["bbtest", "container", "systemd-nspawn", "busyboxtest", "1", "-"], listing.stdout
            t.machinectl(
                "show",
                "bbtest",
                "-p",
                "Name",
                "-p",
                "Class",
                "-p",
                "Service",
                "-p",
                "Unit",
                "-p",
                "Leader",
                "-p",
                "RootDirectory",
                "-p",
                "NetworkInterfaces",
                "-p",
                "State",
            )
            t.manager("GetMachineOSRelease", "s", "bbtest")
            t.manager("GetMachineByPID", "u", leader)
            t.run("ps", "-o", "machine=", "-p", str(leader))
            id_hex = s.machinectl("show", "-p", "Id", "--value", "bbtest").stdout.strip()
            t.note("id is 16 random bytes", str(len(id_hex) == 32))
            (root / "stop").touch()
            out, _ = nspawn.communicate(timeout=30)
            t.note("nspawn exit", f"rc={nspawn.returncode}")
            # what nspawn printed (its own harmless complaints about this sandbox aside)
            printed = [line for line in out.decode().splitlines() if "compat systemd cgroup" not in line]
            t.note("nspawn output", "\n".join(printed))
            t.machinectl("list")
            t.note("state dir after exit", "\n".join(sorted(p.name for p in STATE_DIR.iterdir())))
        finally:
            if nspawn.poll() is None:
                nspawn.kill()
                nspawn.wait()

    steps = dict(assert_same_as_252(scenario, tmp_path))
    assert steps["nspawn exit"] == "rc=0"
    assert steps["id is 16 random bytes"] == "True"
    assert steps["state dir after exit"] == ""
