"""Hypothesis strategies for the arguments of every machine1 method, random and at the boundaries.

Safe by construction: leaders are never real processes other than the test's own parked ones (a
random PID could be moved into a scope and killed), the machine the test keeps is never killed,
terminated or unregistered, and `.host` is never cloned.
"""

from __future__ import annotations

from typing import Any

from dbus_fast import Message
from hypothesis import strategies as st

from .client import manager_call

# D-Bus strings are UTF-8 without NUL: the client library refuses anything else before sending
CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(CHARACTERS, max_size=max_size)


NAMES = st.one_of(
    _text(80),
    st.sampled_from(
        [
            "",
            ".host",
            "nosuch",
            "a-b.c",
            "x" * 64,
            "x" * 65,
            "../x",
            "a/b",
            "-a",
            "a..b",
            "self",
            "ä",
            "a\x01b",
            "a b",
            "keep2",
        ]
    ),
)
SAFE_TARGETS = NAMES.filter(lambda n: n != "keep")  # never the machine the test keeps
IMAGE_NAMES = st.one_of(_text(80), st.sampled_from(["", "..", ".", "a/b", "x" * 300, "img", ".hidden"]))
CLONE_SOURCES = IMAGE_NAMES.filter(lambda n: n != ".host")
PIDS = st.sampled_from([1, 999_999, 4_194_305, 2**31 - 1, 2**31, 2**32 - 1])  # none of them a live process
UINT32 = st.one_of(st.sampled_from([0, 1, 65534, 65535, 65536, 100_000, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
INT32 = st.one_of(st.sampled_from([-(2**31), -1, 0, 1, 9, 15, 64, 65, 2**31 - 1]), st.integers(-(2**31), 2**31 - 1))
UINT64 = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
IDS = st.one_of(st.binary(max_size=20), st.just(bytes(16)))
CLASSES = st.one_of(st.sampled_from(["", "container", "vm", "host", "nonsense"]), _text(10))
PATHS = st.one_of(_text(40), st.sampled_from(["", "/", "rel", "/tmp//x", "/a/../b", "/proc/1/root", "/."]))
IFINDICES = st.lists(INT32, max_size=4)
STRINGS = st.lists(_text(20), max_size=4)


def _args(*parts: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(*parts).map(list)


# (member, signature, strategy of the body); the last ones have deliberately wrong signatures
METHODS: list[tuple[str, str, st.SearchStrategy[list[Any]]]] = [
    ("GetMachine", "s", _args(NAMES)),
    ("GetMachineByPID", "u", _args(st.one_of(st.just(0), PIDS, UINT32))),
    ("ListMachines", "", st.just([])),
    ("GetMachineAddresses", "s", _args(NAMES)),
    ("GetMachineOSRelease", "s", _args(NAMES)),
    ("GetMachineUIDShift", "s", _args(NAMES)),
    ("GetMachineSSHInfo", "s", _args(NAMES)),
    ("MapFromMachineUser", "su", _args(NAMES, UINT32)),
    ("MapToMachineUser", "u", _args(UINT32)),
    ("MapFromMachineGroup", "su", _args(NAMES, UINT32)),
    ("MapToMachineGroup", "u", _args(UINT32)),
    ("RegisterMachine", "sayssus", _args(NAMES, IDS, _text(20), CLASSES, PIDS, PATHS)),
    (
        "RegisterMachineWithNetwork",
        "sayssusai",
        _args(NAMES, IDS, _text(20), CLASSES, PIDS, PATHS, IFINDICES),
    ),
    ("CreateMachine", "sayssusa(sv)", _args(NAMES, IDS, _text(20), CLASSES, PIDS, PATHS, st.just([]))),
    ("KillMachine", "ssi", _args(SAFE_TARGETS, st.sampled_from(["", "all", "leader", "supervisor", "x"]), INT32)),
    ("TerminateMachine", "s", _args(SAFE_TARGETS)),
    ("UnregisterMachine", "s", _args(SAFE_TARGETS)),
    ("OpenMachinePTY", "s", _args(NAMES)),
    ("OpenMachineLogin", "s", _args(NAMES)),
    ("OpenMachineShell", "sssasas", _args(NAMES, _text(10), PATHS, STRINGS, STRINGS)),
    ("BindMountMachine", "sssbb", _args(SAFE_TARGETS, PATHS, PATHS, st.booleans(), st.booleans())),
    ("CopyToMachine", "sss", _args(SAFE_TARGETS, PATHS, PATHS)),
    ("CopyFromMachineWithFlags", "ssst", _args(SAFE_TARGETS, PATHS, PATHS, UINT64)),
    ("OpenMachineRootDirectory", "s", _args(NAMES)),
    ("GetImage", "s", _args(IMAGE_NAMES)),
    ("ListImages", "", st.just([])),
    ("GetImageOSRelease", "s", _args(IMAGE_NAMES)),
    ("GetImageMachineID", "s", _args(IMAGE_NAMES)),
    ("RemoveImage", "s", _args(IMAGE_NAMES)),
    ("RenameImage", "ss", _args(IMAGE_NAMES, IMAGE_NAMES)),
    ("CloneImage", "ssb", _args(CLONE_SOURCES, IMAGE_NAMES, st.booleans())),
    ("MarkImageReadOnly", "sb", _args(IMAGE_NAMES, st.booleans())),
    ("SetImageLimit", "st", _args(IMAGE_NAMES, UINT64)),
    ("SetPoolLimit", "t", _args(UINT64)),
    ("CleanPool", "s", _args(st.one_of(st.sampled_from(["all", "hidden", ""]), _text(10)))),
    ("GetMachine", "u", _args(UINT32)),
    ("KillMachine", "s", _args(SAFE_TARGETS)),
    ("RegisterMachine", "ss", _args(NAMES, NAMES)),
    ("NoSuchMethod", "", st.just([])),
]


def machine_paths() -> list[str]:
    """Machine objects to aim Machine-interface calls at (never the kept machine)."""
    base = "/org/freedesktop/machine1/machine/"
    return [base + "_2ehost", base + "nosuch", base + "self", base + "_", base + "a_2fb"]


def draw_bus_call(data: st.DataObject) -> Message:
    """A random method of METHODS, on the Manager or (the same member) on a machine object."""
    member, signature, strategy = data.draw(st.sampled_from(METHODS))
    body = data.draw(strategy)
    if data.draw(st.booleans()):
        return manager_call(member, signature, body)
    return Message(
        destination="org.freedesktop.machine1",
        path=data.draw(st.sampled_from(machine_paths())),
        interface="org.freedesktop.machine1.Machine",
        member=member,
        signature=signature,
        body=body,
    )


# Varlink: every method of the machine socket with random, boundary and wrongly typed parameters

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    _text(30),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text(8), inner, max_size=4), max_leaves=8
)
# pid fields that act (kill, terminate, register) only ever name non-live PIDs or the caller (0)
SAFE_PROCESS_IDS = st.one_of(
    st.fixed_dictionaries({"pid": st.one_of(st.just(0), PIDS)}, optional={"pidfdId": UINT64, "bootId": _text(40)}),
    JSON_SCALARS,
)
PROCESS_IDS = st.one_of(SAFE_PROCESS_IDS, st.fixed_dictionaries({"pid": INT32}), JSON_VALUES)


def _fields(required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Parameter objects: mostly well-typed fields, sometimes missing, wrongly typed, null or unknown ones."""
    typed = st.fixed_dictionaries(required, optional=optional)
    loose = st.dictionaries(st.sampled_from([*required, *optional, "bogus"]), JSON_VALUES, max_size=6)
    return st.one_of(typed, typed, typed, loose)


LOOKUP: dict[str, st.SearchStrategy[Any]] = {
    "name": SAFE_TARGETS,
    "pid": SAFE_PROCESS_IDS,
    "allowInteractiveAuthentication": st.booleans(),
}
VIEW = {**LOOKUP, "name": NAMES, "pid": PROCESS_IDS}
CLEAN_MODES = st.one_of(st.sampled_from(["all", "hidden", ""]), _text(8))


def _with_leader(parameters: Any) -> Any:
    """Register always names a (non-live) leader: without one the caller, the test itself, would lead."""
    if isinstance(parameters, dict) and "leader" not in parameters and "leaderProcessId" not in parameters:
        return {**parameters, "leader": 999_999}
    return parameters


# (method, parameter strategy)
VARLINK_METHODS: list[tuple[str, st.SearchStrategy[Any]]] = [
    (
        "io.systemd.Machine.Register",
        _fields(
            {"name": NAMES, "class": CLASSES},
            {
                "id": st.one_of(_text(40), st.just("0123456789abcdef0123456789abcdef")),
                "service": _text(20),
                "leader": PIDS,
                "leaderProcessId": SAFE_PROCESS_IDS,
                "rootDirectory": PATHS,
                "ifIndices": IFINDICES,
                "vSockCid": UINT32,
                "sshAddress": _text(20),
                "sshPrivateKeyPath": PATHS,
                "allocateUnit": st.booleans(),
            },
        ).map(_with_leader),
    ),
    ("io.systemd.Machine.Unregister", _fields({}, LOOKUP)),
    ("io.systemd.Machine.Terminate", _fields({}, LOOKUP)),
    (
        "io.systemd.Machine.Kill",
        _fields({"signal": INT32}, {**LOOKUP, "whom": st.sampled_from(["", "all", "leader", "supervisor", "x"])}),
    ),
    (
        "io.systemd.Machine.List",
        _fields({}, {**VIEW, "acquireMetadata": st.sampled_from(["no", "yes", "graceful", "maybe"])}),
    ),
    (
        "io.systemd.Machine.Open",
        _fields(
            {"mode": st.sampled_from(["tty", "login", "shell", "x"])},
            {**VIEW, "user": _text(10), "path": PATHS, "args": STRINGS, "environment": STRINGS},
        ),
    ),
    ("io.systemd.Machine.MapFrom", _fields({}, {**VIEW, "uid": UINT32, "gid": UINT32})),
    ("io.systemd.Machine.MapTo", _fields({}, {"uid": UINT32, "gid": UINT32})),
    (
        "io.systemd.Machine.BindMount",
        _fields({"source": PATHS}, {**LOOKUP, "destination": PATHS, "readOnly": st.booleans(), "mkdir": st.booleans()}),
    ),
    (
        "io.systemd.Machine.CopyFrom",
        _fields({"source": PATHS}, {**LOOKUP, "destination": PATHS, "replace": st.booleans()}),
    ),
    (
        "io.systemd.Machine.CopyTo",
        _fields({"source": PATHS}, {**LOOKUP, "destination": PATHS, "replace": st.booleans()}),
    ),
    ("io.systemd.Machine.OpenRootDirectory", _fields({}, VIEW)),
    (
        "io.systemd.MachineImage.List",
        _fields({}, {"name": IMAGE_NAMES, "acquireMetadata": st.sampled_from(["no", "yes", "graceful"])}),
    ),
    (
        "io.systemd.MachineImage.Update",
        _fields({"name": IMAGE_NAMES}, {"newName": IMAGE_NAMES, "readOnly": st.booleans(), "limit": UINT64}),
    ),
    (
        "io.systemd.MachineImage.Clone",
        _fields({"name": CLONE_SOURCES, "newName": IMAGE_NAMES}, {"readOnly": st.booleans()}),
    ),
    ("io.systemd.MachineImage.Remove", _fields({"name": IMAGE_NAMES}, {})),
    ("io.systemd.MachineImage.SetPoolLimit", _fields({"limit": UINT64}, {})),
    ("io.systemd.MachineImage.CleanPool", _fields({"mode": CLEAN_MODES}, {})),
    ("io.systemd.service.Ping", _fields({}, {})),
    ("io.systemd.service.SetLogLevel", _fields({}, {"level": st.integers(-2, 9)})),
    ("io.systemd.service.GetEnvironment", _fields({}, {})),
    ("io.systemd.service.Reload", _fields({}, {})),
    ("org.varlink.service.GetInfo", _fields({}, {})),
    ("org.varlink.service.GetInterfaceDescription", _fields({"interface": _text(30)}, {})),
    ("io.systemd.Machine.Nope", _fields({}, {})),
]


def varlink_calls() -> st.SearchStrategy[dict[str, Any]]:
    """Whole call objects: a method, its parameters, and sometimes `more` or `oneway`."""

    def call(entry: tuple[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
        method, parameters = entry
        flags = st.sampled_from([{}, {}, {"more": True}, {"oneway": True}])
        return st.tuples(parameters, flags).map(lambda pf: {"method": method, "parameters": pf[0], **pf[1]})

    return st.sampled_from(VARLINK_METHODS).flatmap(call)
