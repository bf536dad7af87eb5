"""Clients that need systemd on the outer side: an outer booted Debian 12 with the daemon under test, an inner
booted Debian 12 started in it by systemd-nspawn (CreateMachine through the outer systemd).

For pymachined, `make install`'s script installs it in the outer container in place of systemd-machined;
for the reference, the outer container runs systemd-machined 252. The client outputs must match.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.booted import booted_container, ensure_root
from harness.differential import Transcript, _compare
from harness.markers import needs_nspawn

pytestmark = [pytest.mark.slow, needs_nspawn]

INNER_SETUP = """set -e
mkdir -p /opt/inner
mount -t tmpfs tmpfs /opt/inner
mkdir /opt/inner/upper /opt/inner/work /opt/inner/merged
mount -t overlay overlay -o lowerdir=/opt/inner-lower,upperdir=/opt/inner/upper,workdir=/opt/inner/work \
    /opt/inner/merged
echo inner > /opt/inner/merged/etc/hostname
"""
NUMBERS = re.compile(r"\d+")
IDS = re.compile(r"\b[0-9a-f]{32}\b")


def scenario(machined: str, workdir: Path) -> list[tuple[str, str]]:
    workdir.mkdir(parents=True)
    lower = ensure_root()
    with booted_container(workdir, machined=machined, nspawn_args=[f"--bind-ro={lower}:/opt/inner-lower"]) as ct:
        if machined == "pymachined":
            install = ct.run(
                "env", "PYMACHINED_VENV=/opt/pymachined-venv", "/opt/pymachined-repo/scripts/install", timeout=120
            )
            assert install.returncode == 0, install.output
        assert ct.sh(INNER_SETUP).returncode == 0
        started = ct.run(
            "systemd-run",
            "--unit=inner-ct",
            "-p",
            "Delegate=yes",
            "systemd-nspawn",
            "-b",
            "--register=yes",
            "--private-network",
            "--console=read-only",
            "-D",
            "/opt/inner/merged",
            "-M",
            "inner",
        )
        assert started.returncode == 0, started.output
        ct.wait_until(
            "systemctl -M inner is-system-running --wait >/dev/null 2>&1; "
            "systemctl -M inner is-active -q systemd-logind",
            "the inner container to boot",
            timeout=60,
        )
        t = Transcript(ct, workdir=workdir)

        def structure(label: str, *argv: str) -> None:
            """Output with every number replaced: PIDs and cgroup IDs differ between boots."""
            result = ct.run(*argv, timeout=30)
            t.note(label, f"rc={result.returncode}\n" + NUMBERS.sub("N", IDS.sub("<id>", result.stdout)))

        t.run("machinectl", "list")
        t.run("systemctl", "list-machines", "--no-pager")
        t.run("systemctl", "--recursive", "list-units", "--no-pager", "--no-legend", "--plain", "*logind*")
        structure("systemd-cgls -M inner", "systemd-cgls", "-M", "inner", "--no-pager")
        structure("machinectl status inner", "machinectl", "status", "inner", "--no-pager", "--lines=0")
        structure("systemd-cgls /machine.slice", "systemd-cgls", "--no-pager", "/machine.slice")
        processes = ct.run("ps", "-eo", "machine=,comm=").stdout.split("\n")
        t.note(
            "ps -eo machine,comm (the inner container's)",
            "\n".join(sorted({line.strip() for line in processes if line.strip().startswith("inner")})),
        )
        t.run(
            "systemctl",
            "show",
            "machine-inner.scope",
            "-p",
            "Slice",
            "-p",
            "Description",
            "-p",
            "Delegate",
            "-p",
            "ActiveState",
            "-p",
            "TasksMax",
        )
        t.run("machinectl", "shell", "-q", "inner", "/bin/sh", "-c", "echo $((7+8))")
        # systemd-run -t gets its PTY from the daemon's OpenMachinePTY (under script(1): it wants a terminal)
        run_t = ct.run(
            "script",
            "-qec",
            "systemd-run -M inner --wait -t /bin/sh -c 'echo via-pty'; echo rc=$?",
            "/dev/null",
            timeout=30,
        )
        # the banner lines reach script(1) or not, depending on timing: keep output, result, exit status
        kept = [
            line.strip("\0\r^@")
            for line in run_t.stdout.splitlines()
            if "via-pty" in line or line.startswith(("Finished with result", "rc="))
        ]
        t.note("systemd-run -M inner -t", "\n".join(kept))
        t.run("machinectl", "reboot", "inner")
        ct.wait_until(
            "systemctl -M inner is-system-running --wait >/dev/null 2>&1; "
            '[ "$(systemctl -M inner show -p NRestarts --value systemd-logind)" ]',
            "the reboot",
            timeout=60,
        )
        t.run("machinectl", "terminate", "inner")
        ct.wait_until("! machinectl show inner >/dev/null 2>&1", "the inner container to go", timeout=60)
        t.run("machinectl", "list")
        t.run("systemctl", "is-active", "machine-inner.scope")
        return t.steps


def test_outer_systemd_clients(tmp_path: Path) -> None:
    ours = scenario("pymachined", tmp_path / "pymachined")
    reference = scenario("machined252", tmp_path / "machined252")
    steps = dict(_compare(ours, reference))
    assert "inner         running" in steps["systemctl list-machines --no-pager"]
    assert (
        "inner:systemd-logind.service"
        in steps["systemctl --recursive list-units --no-pager --no-legend --plain *logind*"]
    )
    assert "Control group /machine.slice/machine-inner.scope" in steps["systemd-cgls -M inner"]
    assert "init.scope" in steps["machinectl status inner"]
    assert "machine-inner.scope" in steps["systemd-cgls /machine.slice"]
    assert "systemd-logind" in steps["ps -eo machine,comm (the inner container's)"]
    assert "15" in steps["machinectl shell -q inner /bin/sh -c echo $((7+8))"]
    assert steps["systemd-run -M inner -t"] == "via-pty\nFinished with result: success\nrc=0"
