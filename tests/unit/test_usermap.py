import os

import pytest

from pymachined.errors import MachineError, dbus_error
from pymachined.machine import Machine, MachineClass
from pymachined.ops import usermap
from pymachined.ops.usermap import IdMapIndex, MapLine, map_to_machine


def fake_maps(monkeypatch: pytest.MonkeyPatch, maps: dict[int, list[MapLine]]) -> None:
    monkeypatch.setattr(usermap, "read_map", lambda pid, kind: maps.get(pid))
    monkeypatch.setattr(usermap, "userns_id", lambda pid: 1000 + pid)


def container(name: str, leader: int) -> Machine:
    return Machine(name=name, machine_class=MachineClass.CONTAINER, leader=leader)


def test_index_finds_ranges_and_skips_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_maps(
        monkeypatch,
        {
            1: [MapLine(0, 100000, 65536)],
            2: [MapLine(0, 200000, 1000), MapLine(1000, 300000, 10)],
            3: [MapLine(0, 0, 4294967295)],
        },
    )
    index = IdMapIndex("uid")
    machines = [container("a", 1), container("b", 2), container("plain", 3)]
    for m in machines:
        index.add(m)
    assert index.lookup(101000) == (machines[0], 1000)
    assert index.lookup(200999) == (machines[1], 999)
    assert index.lookup(300005) == (machines[1], 1005)
    assert index.lookup(200000 + 1000) is None
    assert index.lookup(50) is None
    index.remove(machines[0])
    assert index.lookup(101000) is None


def test_index_reads_maps_at_lookup_not_at_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    maps: dict[int, list[MapLine]] = {1: [MapLine(0, 100000, 65536)], 2: []}
    reads: list[int] = []

    def read_map(pid: int, kind: str) -> list[MapLine] | None:
        reads.append(pid)
        return maps.get(pid)

    monkeypatch.setattr(usermap, "read_map", read_map)
    monkeypatch.setattr(usermap, "userns_id", lambda pid: 1000 + pid)
    index = IdMapIndex("uid")
    a, b, gone = container("a", 1), container("b", 2), container("gone", 3)
    for m in (a, b, gone):
        index.add(m)
    index.remove(gone)  # registered and unregistered before anyone asked: never read
    assert reads == []
    assert index.lookup(100005) == (a, 5)
    assert sorted(reads) == [1, 2]
    assert index.lookup(100006) == (a, 6)
    assert sorted(reads) == [1, 2, 2]  # b's map was empty: read again until it is written
    maps[2] = [MapLine(0, 300000, 10)]
    assert index.lookup(300001) == (b, 1)
    index.lookup(300002)
    assert sorted(reads) == [1, 2, 2, 2]


def test_map_to_machine_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_maps(monkeypatch, {})
    index = IdMapIndex("gid")
    for value, expected in [
        (4294967295, ("org.freedesktop.DBus.Error.InvalidArgs", "Invalid group ID 4294967295")),
        (65535, ("org.freedesktop.DBus.Error.InvalidArgs", "Invalid group ID 65535")),
        (5, ("org.freedesktop.machine1.NoSuchGroupMapping", "Group 5 belongs to host GID range")),
        (70000, ("org.freedesktop.machine1.NoSuchGroupMapping", "No matching group mapping for 70000.")),
    ]:
        with pytest.raises(MachineError) as info:
            map_to_machine(index, value)
        assert dbus_error(info.value) == expected


def test_map_from_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_maps(monkeypatch, {7: [MapLine(0, 100000, 65536)]})
    m = container("c", 7)
    assert usermap.map_from_machine(m, 1000, "uid") == 101000
    with pytest.raises(MachineError) as info:
        usermap.map_from_machine(m, 70000, "gid")
    # 252's quirk: the group case answers with the user-mapping error name
    assert dbus_error(info.value) == (
        "org.freedesktop.machine1.NoSuchUserMapping",
        "Machine 'c' has no matching group mappings.",
    )
    host = Machine(name=".host", machine_class=MachineClass.HOST, leader=1)
    with pytest.raises(MachineError) as info:
        usermap.map_from_machine(host, 5, "uid")
    assert dbus_error(info.value)[1] == "Not supported for non-container machines."


def test_read_map_of_this_process() -> None:
    lines = usermap.read_map(os.getpid(), "uid")
    assert lines is not None and lines[0].inside == 0
