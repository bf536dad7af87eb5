"""Authorization on the Varlink machine socket with a real polkitd (newer machined's rules).

Non-root peers are asked to polkit as a unix-process; Register needs register-machine (create-machine
with allocateUnit) and, for a non-root caller, a leader it owns; a machine's owner may unregister,
terminate, kill and open it without polkit; everything else needs manage-machines.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from harness.system import Leader, System, wait_for
from harness.varlink_raw import NOBODY, raw_call_as

MACHINE = "/run/systemd/machine/io.systemd.Machine"
OK = '{"parameters":{}}'
DENIED = '{"error":"org.varlink.service.PermissionDenied","parameters":{}}'
INTERACTIVE = '{"error":"io.systemd.InteractiveAuthenticationRequired","parameters":{}}'

# Granted only with exactly the details newer machined sends, so a grant proves them.
GRANT_REGISTER = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.machine1.register-machine" && subject.user == "nobody" &&
        action.lookup("machine") == "mine" && action.lookup("class") == "container" &&
        action.lookup("owner_uid") == "65534")
        return polkit.Result.YES;
});
"""
GRANT_MANAGE = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.machine1.manage-machines" && subject.user == "nobody" &&
        action.lookup("machine") == "foo" && action.lookup("verb") == "kill" && action.lookup("owner_uid") == "0")
        return polkit.Result.YES;
});
"""


def as_nobody(method: str, parameters: dict[str, Any]) -> str:
    return raw_call_as(MACHINE, {"method": method, "parameters": parameters})


def nobody_leader(s: System, unit: str) -> Leader:
    cgroup = s.make_cgroup(f"machine.slice/{unit}")
    process = subprocess.Popen([*NOBODY, "sleep", "infinity"], stdin=subprocess.DEVNULL)
    (cgroup / "cgroup.procs").write_text(str(process.pid))
    leader = Leader(process.pid, cgroup, process)
    s.leaders.append(leader)
    return leader


def test_register_needs_the_action_and_an_own_leader(machined: System) -> None:
    root_leader = machined.spawn_leader("machine-foo.scope")
    machined.register("foo", root_leader.pid)
    mine = nobody_leader(machined, "machine-mine.scope")
    register_mine = {"name": "mine", "class": "container", "leader": mine.pid}
    machined.start_polkit()
    assert as_nobody("io.systemd.Machine.Register", register_mine) == INTERACTIVE
    assert as_nobody("io.systemd.Machine.Kill", {"name": "foo", "signal": 18}) == INTERACTIVE
    machined.stop_polkit()
    machined.start_polkit(GRANT_REGISTER)
    # granted, but not for somebody else's process
    assert as_nobody(
        "io.systemd.Machine.Register", {"name": "mine", "class": "container", "leader": root_leader.pid}
    ) == (DENIED)
    # the details must match the rule: another name is not granted
    other = {"name": "other", "class": "container", "leader": mine.pid}
    assert as_nobody("io.systemd.Machine.Register", other) == INTERACTIVE
    assert as_nobody("io.systemd.Machine.Register", register_mine) == OK
    listed = json.loads(as_nobody("io.systemd.Machine.List", {"name": "mine"}))
    assert listed["parameters"]["leader"]["pid"] == mine.pid
    assert "UID=65534" in Path("/run/systemd/machines/mine").read_text().splitlines()
    # the owner needs no polkit for its own machine, but does for others' and for the root directory
    assert as_nobody("io.systemd.Machine.Kill", {"name": "mine", "whom": "leader", "signal": 18}) == OK
    assert as_nobody("io.systemd.Machine.OpenRootDirectory", {"name": "mine"}) == INTERACTIVE
    assert as_nobody("io.systemd.Machine.Kill", {"name": "foo", "whom": "leader", "signal": 18}) == INTERACTIVE
    assert as_nobody("io.systemd.Machine.Terminate", {"name": "mine"}) == OK
    wait_for(lambda: mine.process is not None and mine.process.poll() is not None, "the owner's machine to stop")
    assert root_leader.process is not None and root_leader.process.poll() is None


def test_manage_machines_grant_with_details(machined: System) -> None:
    root_leader = machined.spawn_leader("machine-foo.scope")
    machined.register("foo", root_leader.pid)
    machined.start_polkit(GRANT_MANAGE)
    assert as_nobody("io.systemd.Machine.Kill", {"name": "foo", "whom": "leader", "signal": 18}) == OK
    # the rule names verb=kill: terminate is not granted by it
    assert as_nobody("io.systemd.Machine.Terminate", {"name": "foo"}) == INTERACTIVE
    assert as_nobody("io.systemd.Machine.Terminate", {"name": "foo", "allowInteractiveAuthentication": True}) in (
        INTERACTIVE,
        DENIED,
    )
    assert root_leader.process is not None and root_leader.process.poll() is None
