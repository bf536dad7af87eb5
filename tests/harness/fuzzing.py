"""Hypothesis strategies for the arguments of every machine1 method, random and at the boundaries.

Safe by construction: leaders are never real processes other than the test's own parked ones (a
random PID could be moved into a scope and killed), the machine the test keeps is never killed,
terminated or unregistered, and `.host` is never cloned.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

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
