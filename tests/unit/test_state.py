import os
from pathlib import Path

from pymachined.machine import Machine, MachineClass, Timestamp
from pymachined.state import StateDirectory, parse_env, serialize

FULL = (
    "# This is private data. Do not parse.\n"
    "NAME=ctest\n"
    "SCOPE=machine-ctest.scope\n"
    "SCOPE_JOB=/org/freedesktop/systemd1/job/101\n"
    "SERVICE=my-svc\n"
    "ROOT=/srv/ct\n"
    "ID=112233445566778899aabbccddeeff00\n"
    "LEADER=11092\n"
    "CLASS=container\n"
    "REALTIME=1795606247938593\n"
    "MONOTONIC=1131394912\n"
)


def full_machine() -> Machine:
    return Machine(
        name="ctest",
        machine_class=MachineClass.CONTAINER,
        id=bytes.fromhex("112233445566778899aabbccddeeff00"),
        service="my-svc",
        root_directory="/srv/ct",
        leader=11092,
        unit="machine-ctest.scope",
        scope_job="/org/freedesktop/systemd1/job/101",
        timestamp=Timestamp(1795606247938593, 1131394912),
    )


def test_serialize_matches_252_bytes() -> None:
    assert serialize(full_machine()) == FULL


def test_serialize_minimal_with_netif() -> None:
    m = Machine(
        name="rtest",
        machine_class=MachineClass.VM,
        leader=11582,
        unit="zzhelper-reg1.scope",
        netif=[3, 7],
        timestamp=Timestamp(1795606273226379, 1156682697),
    )
    assert serialize(m) == (
        "# This is private data. Do not parse.\nNAME=rtest\nSCOPE=zzhelper-reg1.scope\nLEADER=11582\n"
        "CLASS=vm\nREALTIME=1795606273226379\nMONOTONIC=1156682697\nNETIF=3 7\n"
    )


def test_escaped_unit_round_trips(tmp_path: Path) -> None:
    d = StateDirectory(tmp_path)
    m = full_machine()
    m.unit = "machine-my\\x2dct.scope"
    d.save(m)
    assert "SCOPE=machine-my\\\\x2dct.scope\n" in (tmp_path / "ctest").read_text()
    loaded = Machine(name="ctest")
    d.load(loaded)
    assert loaded.unit == m.unit


def test_save_is_atomic_and_links_unit(tmp_path: Path) -> None:
    d = StateDirectory(tmp_path)
    d.save(full_machine())
    assert sorted(os.listdir(tmp_path)) == ["ctest", "unit:machine-ctest.scope"]
    assert os.readlink(tmp_path / "unit:machine-ctest.scope") == "ctest"
    assert (tmp_path / "ctest").stat().st_mode & 0o777 == 0o644


def test_load_round_trip(tmp_path: Path) -> None:
    d = StateDirectory(tmp_path)
    original = full_machine()
    d.save(original)
    loaded = Machine(name="ctest")
    d.load(loaded)
    for attr in ("machine_class", "id", "service", "root_directory", "leader", "unit", "scope_job", "timestamp"):
        assert getattr(loaded, attr) == getattr(original, attr), attr


def test_load_is_tolerant(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("NAME=other\nLEADER=abc\nCLASS=host\nID=zz\nNETIF=1 2 x 5\n")
    m = Machine(name="x")
    StateDirectory(tmp_path).load(m)
    assert (m.leader, m.machine_class, m.id, m.netif) == (0, MachineClass.UNKNOWN, b"", [1, 2, 5])


def test_load_reads_257_quoted_values(tmp_path: Path) -> None:
    (tmp_path / "q").write_text('NAME=q\nSCOPE="machine-q.scope"\nSERVICE="my svc"\nNETIF="3 7"\nUID=0\nLEADER=42\n')
    m = Machine(name="q")
    StateDirectory(tmp_path).load(m)
    assert (m.unit, m.service, m.netif, m.leader) == ("machine-q.scope", "my svc", [3, 7], 42)


def test_names_skip_hidden_links_and_invalid(tmp_path: Path) -> None:
    for name in ("good", ".#goodXYZ", "unit:x.scope", "Bad_Name_"):
        (tmp_path / name).write_text("")
    assert StateDirectory(tmp_path).names() == ["good"]


def test_parse_env_quotes_and_comments() -> None:
    text = '# c\n; c\nA=1\nB=\'two words\'\nC="x\\"y"\nD=a\\ b\nE\n'
    assert parse_env(text) == {"A": "1", "B": "two words", "C": 'x"y', "D": "a b"}


def test_owner_uid_only_for_non_root_owners(tmp_path: Path) -> None:
    """Newer machined's UID= line: written after NAME for a non-root owner, absent (252's bytes) for root."""
    assert "UID=" not in serialize(full_machine())
    owned = full_machine()
    owned.uid = 65534
    assert serialize(owned).splitlines()[1:3] == ["NAME=ctest", "UID=65534"]
    d = StateDirectory(tmp_path)
    d.save(owned)
    loaded = Machine(name="ctest")
    d.load(loaded)
    assert loaded.uid == 65534
