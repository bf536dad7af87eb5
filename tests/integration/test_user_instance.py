"""The per-user instance (`pymachined --user`): a user registers, lists and terminates its own machines.

uid 65534 runs its own session bus and pymachined --user beside the system instance of the test.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.system import System, wait_for
from harness.user_instance import HOME, RUNTIME, UID, UserInstance, system_python_problem
from harness.varlink_raw import raw_call

pytestmark = pytest.mark.skipif(system_python_problem() is not None, reason=str(system_python_problem()))

DENIED_DBUS = "Only root may register machines for other users"
DENIED_VARLINK = '{"error":"org.varlink.service.PermissionDenied","parameters":{}}'


@pytest.fixture
def user(machined: System) -> Iterator[UserInstance]:
    instance = UserInstance(machined)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


def test_user_registers_lists_and_terminates_its_own(machined: System, user: UserInstance) -> None:
    leader = user.leader("machine-mine.scope")
    registered = user.manager_call("RegisterMachine", "sayssus", "mine", 0, "", "container", leader.pid, "")
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.strip() == 'o "/org/freedesktop/machine1/machine/mine"'
    # only the user's machines: no .host in a per-user instance
    listed = user.manager_call("ListMachines")
    assert listed.stdout.strip() == 'a(ssso) 1 "mine" "container" "" "/org/freedesktop/machine1/machine/mine"'
    socket = RUNTIME / "systemd/machine/io.systemd.Machine"
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600 and os.stat(socket).st_uid == UID
    reply = user.varlink("io.systemd.Machine.List", {"name": "mine"})
    assert f'"leader":{{"pid":{leader.pid},' in reply and '"unit":"machine-mine.scope"' in reply
    assert (RUNTIME / "systemd/machines/mine").exists()
    # the system instance knows nothing of it
    system_list = machined.manager_call("ListMachines").stdout
    assert "mine" not in system_list and ".host" in system_list
    assert not Path("/run/systemd/machines/mine").exists()
    assert '"error":"io.systemd.Machine.NoSuchMachine"' in raw_call(
        "/run/systemd/machine/io.systemd.Machine", {"method": "io.systemd.Machine.List", "parameters": {"name": "mine"}}
    )
    # terminate: the user's own processes get SIGTERM, the machine goes
    terminated = user.manager_call("TerminateMachine", "s", "mine")
    assert terminated.returncode == 0, terminated.stderr
    wait_for(lambda: leader.process is not None and leader.process.poll() is not None, "the leader to end")
    wait_for(lambda: not (RUNTIME / "systemd/machines/mine").exists(), "the machine to go")
    assert "mine" not in user.manager_call("ListMachines").stdout


def test_user_registers_over_varlink(user: UserInstance) -> None:
    leader = user.leader("machine-vl.scope")
    reply = user.varlink("io.systemd.Machine.Register", {"name": "vl", "class": "container", "leader": leader.pid})
    assert reply == '{"parameters":{}}'
    assert '"name":"vl"' in user.varlink("io.systemd.Machine.List", {"name": "vl"})
    assert user.varlink("io.systemd.Machine.Terminate", {"name": "vl"}) == '{"parameters":{}}'
    wait_for(lambda: leader.process is not None and leader.process.poll() is not None, "the leader to end")


def test_user_cannot_register_another_users_process(machined: System, user: UserInstance) -> None:
    root_leader = machined.spawn_leader("machine-other.scope")
    refused = user.manager_call("RegisterMachine", "sayssus", "other", 0, "", "container", root_leader.pid, "")
    assert refused.returncode != 0 and DENIED_DBUS in refused.stderr
    varlink = user.varlink(
        "io.systemd.Machine.Register", {"name": "other", "class": "container", "leader": root_leader.pid}
    )
    assert varlink == DENIED_VARLINK
    assert "a(ssso) 0" in user.manager_call("ListMachines").stdout
    assert os.path.exists(f"/proc/{root_leader.pid}")


def test_user_image_pool(machined: System, user: UserInstance) -> None:
    pool = HOME / ".local/state/machines"
    image = pool / "myimage"
    image.mkdir(parents=True)
    for path in (HOME / ".local", HOME / ".local/state", pool, image):
        os.chown(path, UID, UID)
    assert (
        user.run(
            "busctl",
            "--user",
            "get-property",
            "org.freedesktop.machine1",
            "/org/freedesktop/machine1",
            "org.freedesktop.machine1.Manager",
            "PoolPath",
        ).stdout.strip()
        == f's "{pool}"'
    )
    images = user.manager_call("ListImages").stdout
    assert '"myimage" "directory"' in images and ".host" not in images
    assert "myimage" not in machined.manager_call("ListImages").stdout
    cloned = user.manager_call("CloneImage", "ssb", "myimage", "copy", "false")
    assert cloned.returncode == 0, cloned.stderr
    assert (pool / "copy").is_dir() and (pool / "copy").stat().st_uid == UID
