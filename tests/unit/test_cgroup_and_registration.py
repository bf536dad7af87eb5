import errno

import pytest

from pymachined.cgroup import Hierarchy, parse_proc_cgroup, unit_from_cgroup_path
from pymachined.errors import ErrorKind, MachineError, dbus_error, from_errno
from pymachined.machine import MachineClass
from pymachined.registry import validate_registration

HYBRID = "9:name=systemd:/\n4:memory:/x\n0::/machine.slice/machine-foo.scope\n"


def test_proc_cgroup_hybrid_uses_unified_line() -> None:
    assert parse_proc_cgroup(HYBRID, Hierarchy.HYBRID) == "/machine.slice/machine-foo.scope"
    assert parse_proc_cgroup(HYBRID, Hierarchy.UNIFIED) == "/machine.slice/machine-foo.scope"
    assert parse_proc_cgroup(HYBRID, Hierarchy.LEGACY) == "/"


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("/machine.slice/machine-foo.scope", "machine-foo.scope"),
        ("/system.slice/systemd-nspawn@x.service/payload", "systemd-nspawn@x.service"),
        ("/a.slice/a-b.slice/_foo.service", "foo.service"),
        ("/zz.scope", "zz.scope"),
    ],
)
def test_unit_from_cgroup_path(path: str, unit: str) -> None:
    assert unit_from_cgroup_path(path) == unit


@pytest.mark.parametrize("path", ["/", "/machine.slice", "/machine.slice/notaunit", ""])
def test_unit_from_cgroup_path_enxio(path: str) -> None:
    with pytest.raises(OSError) as info:
        unit_from_cgroup_path(path)
    assert info.value.errno == errno.ENXIO


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad_name"}, "Invalid machine name"),
        ({"name": ".host"}, "Invalid machine name"),
        ({"machine_id": b"\x01\x02\x03"}, "Invalid machine ID parameter"),
        ({"netif": [3, 0]}, "Invalid network interface index 0"),
        ({"netif": [-2]}, "Invalid network interface index -2"),
        ({"class_name": "host"}, "Invalid machine class parameter"),
        ({"leader": 1}, "Invalid leader PID"),
        ({"root_directory": "rel/path"}, "Root directory must be empty or an absolute path"),
        # the first failing check wins
        ({"name": "bad_name", "leader": 1, "class_name": "x"}, "Invalid machine name"),
    ],
)
def test_validation_errors_in_252_order(kwargs: dict, message: str) -> None:
    args = {
        "name": "foo",
        "machine_id": b"",
        "service": "",
        "class_name": "container",
        "leader": 42,
        "root_directory": "",
        "netif": (),
    }
    args.update(kwargs)
    with pytest.raises(MachineError) as info:
        validate_registration(**args)
    assert dbus_error(info.value) == ("org.freedesktop.DBus.Error.InvalidArgs", message)


def test_zero_id_means_unset_and_empty_class_passes() -> None:
    req = validate_registration("foo", bytes(16), "", "", 0, "")
    assert req.id == b"" and req.machine_class is MachineClass.UNKNOWN


def test_errno_table() -> None:
    assert dbus_error(from_errno(errno.ENXIO, "Failed to determine unit of process 5 : %m")) == (
        "System.Error.ENXIO",
        "Failed to determine unit of process 5 : No such device or address",
    )
    assert dbus_error(from_errno(errno.ESRCH)) == ("org.freedesktop.DBus.Error.UnixProcessIdUnknown", "No such process")
    assert dbus_error(from_errno(errno.EEXIST)) == ("org.freedesktop.DBus.Error.FileExists", "File exists")
    assert dbus_error(from_errno(errno.EOPNOTSUPP)) == (
        "org.freedesktop.DBus.Error.NotSupported",
        "Operation not supported",
    )
    assert dbus_error(from_errno(errno.EHOSTUNREACH)) == ("System.Error.EHOSTUNREACH", "No route to host")
    assert dbus_error(from_errno(errno.EROFS)) == ("System.Error.EROFS", "Read-only file system")


def test_every_named_kind_has_a_dbus_name() -> None:
    for kind in ErrorKind:
        if kind in (ErrorKind.ERRNO, ErrorKind.FORWARDED):
            continue
        name, _ = dbus_error(MachineError(kind, "x"))
        assert name.count(".") >= 3
