"""Authorization through a real polkitd, as systemd-machined 252 asks it."""

from __future__ import annotations

from pathlib import Path

from harness.differential import Transcript, assert_same_as_252
from harness.system import System

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
MANAGER = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]
GRANT_MANAGE_MACHINES = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.machine1.manage-machines" && subject.user == "nobody")
        return polkit.Result.YES;
});
"""


def attempts(s: System, t: Transcript, leader_pid: int, label: str) -> None:
    for argv in (
        ["busctl", "call", *MANAGER, "KillMachine", "ssi", "foo", "leader", "18"],
        [
            "busctl",
            "--allow-interactive-authorization=no",
            "call",
            *MANAGER,
            "KillMachine",
            "ssi",
            "foo",
            "leader",
            "18",
        ],
        ["busctl", "call", *MANAGER, "UnregisterMachine", "s", "nosuch"],
        ["busctl", "call", *MANAGER, "KillMachine", "ssi", "foo", "bogus", "18"],
        ["busctl", "call", *MANAGER, "RemoveImage", "s", "img"],
        ["busctl", "call", *MANAGER, "MarkImageReadOnly", "sb", "img", "true"],
        ["machinectl", "--no-ask-password", "kill", "--kill-whom=leader", "--signal=SIGCONT", "foo"],
    ):
        result = s.run(*NOBODY, *argv)
        t.record(f"{label}: {' '.join(argv)}", result)


def test_polkit_decides_for_unprivileged_callers(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        leader = t.leader("machine-foo.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", leader.pid, "")
        Path("/var/lib/machines/img").mkdir()
        s.start_polkit()
        attempts(s, t, leader.pid, "no rule")
        s.stop_polkit()
        s.start_polkit(GRANT_MANAGE_MACHINES)
        attempts(s, t, leader.pid, "manage-machines granted")
        t.note("leader still alive", str(leader.process is not None and leader.process.poll() is None))
        t.run("ls", "/var/lib/machines")

    steps = dict(assert_same_as_252(scenario, tmp_path))
    kill = " ".join(["busctl", "call", *MANAGER, "KillMachine", "ssi", "foo", "leader", "18"])
    remove = " ".join(["busctl", "call", *MANAGER, "RemoveImage", "s", "img"])
    assert "Interactive authentication required." in steps[f"no rule: {kill}"]
    assert steps[f"manage-machines granted: {kill}"].startswith("rc=0")
    assert "Interactive authentication required." in steps[f"manage-machines granted: {remove}"]
    assert steps["ls /var/lib/machines"].startswith("rc=0\n--- stdout\nimg\n")
