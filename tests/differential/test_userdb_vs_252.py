"""The userdb Varlink endpoint: userdbctl, getent (nss-systemd) and raw calls, as 252 answers them."""

from __future__ import annotations

from pathlib import Path

from harness import varlink_raw
from harness.differential import Transcript, assert_same_as_252
from harness.system import System

USERDB = "/run/systemd/userdb/io.systemd.Machine"
ONLY = ["env", "SYSTEMD_ONLY_USERDB=io.systemd.Machine"]


def raw_call(message: dict | bytes) -> str:
    """One request on a fresh connection; the reply, or what happened to the connection."""
    return varlink_raw.raw_call(USERDB, message)


def registered(s: System, t: Transcript) -> None:
    machines = {
        "ctr": s.userns_leader("machine-ctr.scope", "0 100000 65536"),
        "small": s.userns_leader("machine-small.scope", "0 4000000 1000"),
        "multi": s.userns_leader("machine-multi.scope", "0 2100000 1000;1000 3100000 64536"),
        "base1": s.userns_leader("machine-base1.scope", "1 5000000 65536"),
        "my.box": s.userns_leader("machine-my.box.scope", "0 6000000 65536"),
        "averyveryverylongmachinename": s.userns_leader("machine-long.scope", "0 7000000 65536"),
        "plain": s.spawn_leader("machine-plain.scope"),
        "vm": s.userns_leader("machine-vm.scope", "0 8000000 65536"),
    }
    for name, leader in machines.items():
        t.leaders.append(leader.pid)
        t.manager("RegisterMachine", "sayssus", name, 0, "", "vm" if name == "vm" else "container", leader.pid, "")


def test_userdbctl_and_getent(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        registered(s, t)
        for what in (
            "vu-ctr-0",
            "vu-ctr-1000",
            "100005",
            "165534",
            "70000",
            "vu-small-999",
            "4000999",
            "vu-multi-5",
            "3100005",
            "vu-base1-0",
            "5000000",
            "vu-plain-5",
            "vu-my.box-0",
            "vu-vm-0",
            "8000000",
        ):
            t.run(*ONLY, "userdbctl", "--no-pager", "-N", "-s", "io.systemd.Machine", "user", what)
        for what in ("vg-ctr-0", "100005", "vg-multi-1005"):
            t.run(*ONLY, "userdbctl", "--no-pager", "-N", "-s", "io.systemd.Machine", "group", what)
        for db, key in (
            ("passwd", "100005"),
            ("passwd", "vu-ctr-1000"),
            ("passwd", "165535"),
            ("passwd", "70000"),
            ("passwd", "vu-small-5"),
            ("passwd", "vu-plain-5"),
            ("passwd", "vu-ctr-05"),
            ("group", "100005"),
            ("group", "vg-ctr-5"),
            ("group", "vg-vm-0"),
            ("initgroups", "vu-ctr-5"),
        ):
            t.run(*ONLY, "getent", db, key)

    steps = dict(assert_same_as_252(scenario, tmp_path))
    assert steps[" ".join([*ONLY, "getent", "passwd", "100005"])].startswith(
        "rc=0\n--- stdout\nvu-ctr-5:x:100005:65534:UID 5 of Container ctr:/:/usr/sbin/nologin\n"
    )


def test_raw_protocol(tmp_path: Path) -> None:
    method = "io.systemd.UserDatabase.GetUserRecord"
    vectors: list[dict | bytes] = [
        {"method": method, "parameters": {"uid": 70000, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 100005, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 165535, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 100005, "userName": "vu-ctr-5", "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 100005, "userName": "vu-ctr-6", "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 5, "userName": "vu-ctr-5", "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 70000, "service": "io.systemd.Foo"}},
        {"method": method, "parameters": {}},
        {"method": method},
        {"method": method, "parameters": {"service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"service": "io.systemd.Machine"}, "more": True},
        {"method": method, "parameters": {"userName": "vu-plain-5", "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 70000, "service": "io.systemd.Machine", "bogus": 1}},
        {"method": method, "parameters": {"uid": "x", "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": None, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 1.5, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"uid": 4294967295, "service": "io.systemd.Machine"}},
        {"method": method, "parameters": {"service": 5}},
        {
            "method": "io.systemd.UserDatabase.GetGroupRecord",
            "parameters": {"gid": 100005, "service": "io.systemd.Machine"},
        },
        {
            "method": "io.systemd.UserDatabase.GetGroupRecord",
            "parameters": {"groupName": "vg-ctr-7", "service": "io.systemd.Machine"},
        },
        {
            "method": "io.systemd.UserDatabase.GetMemberships",
            "parameters": {"service": "io.systemd.Machine"},
            "more": True,
        },
        {"method": "io.systemd.UserDatabase.GetMemberships", "parameters": {"service": "io.systemd.Other"}},
        {"method": "io.systemd.UserDatabase.Nope", "parameters": {}},
        {"method": "io.systemd.Nope.X", "parameters": {}},
        {"method": "badname", "parameters": {}},
        {"method": "org.varlink.service.GetInfo", "parameters": {}},
        {"method": method, "parameters": {"uid": 100005, "service": "io.systemd.Machine"}, "extra": 1},
        {"method": method, "parameters": {"uid": 100005, "service": "io.systemd.Machine"}, "upgrade": True},
        {"method": method, "parameters": []},
        {"method": method, "parameters": {"uid": 100005, "service": "io.systemd.Machine"}, "oneway": True},
        b"garbage",
        b"",
    ]

    def scenario(s: System, t: Transcript) -> None:
        registered(s, t)
        for vector in vectors:
            t.note(f"raw {vector!r}", raw_call(vector))
        mode = Path(USERDB).stat().st_mode & 0o777
        t.note("socket mode", oct(mode))

    assert_same_as_252(scenario, tmp_path)


def test_varlink_package_as_independent_client(machined: System) -> None:
    import varlink

    from pymachined.varlink.userdb import DESCRIPTION

    leader = machined.userns_leader("machine-ctr.scope", "0 100000 65536")
    machined.register("ctr", leader)
    with varlink.Client(address=f"unix:{USERDB}") as client:
        client.add_interface(varlink.Interface(DESCRIPTION))
        with client.open("io.systemd.UserDatabase") as conn:
            reply = conn.GetUserRecord(uid=101000, service="io.systemd.Machine")
            assert reply["record"]["userName"] == "vu-ctr-1000"
            group = conn.GetGroupRecord(groupName="vg-ctr-7", service="io.systemd.Machine")
            assert group["record"] == {
                "groupName": "vg-ctr-7",
                "gid": 100007,
                "description": "GID 7 of Container ctr",
                "service": "io.systemd.Machine",
                "disposition": "container",
            }
            try:
                conn.GetUserRecord(uid=70000, service="io.systemd.Machine")
            except varlink.VarlinkError as exc:
                assert exc.error() == "io.systemd.UserDatabase.NoRecordFound"
            else:
                raise AssertionError("70000 belongs to no container")
