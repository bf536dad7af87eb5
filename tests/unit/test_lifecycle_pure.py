import pytest

from pymachined.cgroup import slice_path, unit_cgroup_path
from pymachined.errors import MachineError, dbus_error
from pymachined.lifecycle import scope_unit_name, validate_kill
from pymachined.machine import Machine
from pymachined.units.cgroupfs import _parse_properties


def test_scope_unit_names() -> None:
    assert scope_unit_name("foo") == "machine-foo.scope"
    assert scope_unit_name("my-ct") == "machine-my\\x2dct.scope"
    assert scope_unit_name("a.b") == "machine-a.b.scope"


@pytest.mark.parametrize(
    ("slice_", "path"),
    [("machine.slice", "/machine.slice"), ("-.slice", "/"), ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice")],
)
def test_slice_paths(slice_: str, path: str) -> None:
    assert slice_path(slice_) == path


def test_unit_cgroup_path() -> None:
    assert unit_cgroup_path("/system.slice/x-nspawn.service/payload", "x-nspawn.service") == (
        "/system.slice/x-nspawn.service"
    )
    with pytest.raises(OSError):
        unit_cgroup_path("/system.slice/y.service", "x.service")


@pytest.mark.parametrize(
    ("who", "sig", "target"),
    [("", 15, "all"), ("all", 1, "all"), ("leader", 64, "leader"), ("supervisor", 9, "supervisor")],
)
def test_validate_kill_accepts(who: str, sig: int, target: str) -> None:
    assert validate_kill(who, sig) == target


@pytest.mark.parametrize(
    ("who", "sig", "message"),
    [
        ("nobody", 15, "Invalid kill parameter 'nobody'"),
        ("all", 0, "Invalid signal 0"),
        ("all", 65, "Invalid signal 65"),
        ("x", 0, "Invalid kill parameter 'x'"),
    ],
)
def test_validate_kill_refuses(who: str, sig: int, message: str) -> None:
    with pytest.raises(MachineError) as info:
        validate_kill(who, sig)
    assert dbus_error(info.value) == ("org.freedesktop.DBus.Error.InvalidArgs", message)


def test_scope_properties_parse_and_refuse() -> None:
    m = Machine(name="x", leader=42, unit="machine-x.scope")
    s = _parse_properties(
        m,
        [
            ("Slice", "s", "machine-a.slice"),
            ("Description", "s", "d"),
            ("TasksMax", "t", 5),
            ("DevicePolicy", "s", "closed"),
        ],
    )
    assert (s.slice, s.description, s.pids, s.limits["TasksMax"][2]) == ("machine-a.slice", "d", [42], 5)
    with pytest.raises(MachineError) as info:
        _parse_properties(m, [("Bogus", "b", True)])
    assert dbus_error(info.value) == (
        "org.freedesktop.DBus.Error.PropertyReadOnly",
        "Cannot set property Bogus, or unknown property.",
    )
    with pytest.raises(MachineError):
        _parse_properties(m, [("Slice", "s", "not-a-slice")])


@pytest.mark.parametrize("pid", [0, -1, 2**31, 2**32 - 1])
def test_pin_refuses_what_cannot_be_a_pid(pid: int) -> None:
    """Found by fuzzing: CreateMachine with leader 2^31 reached pidfd_open, which raised OverflowError."""
    from pymachined.leader import PidRef

    with pytest.raises(OSError) as info:
        PidRef.pin(pid)
    assert info.value.errno == 3  # ESRCH
