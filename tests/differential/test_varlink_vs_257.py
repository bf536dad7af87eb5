"""The Varlink machine API against systemd-machined 257 (Debian 13), with the same raw calls and varlinkctl 257.

machined 257 runs from the cached Debian 13 root (tests/harness/in-trixie) on the same private bus and
sandbox. Its API is a subset of pymachined's (MapFrom … CleanPool and io.systemd.service came later):
here every call 257 knows is compared byte for byte, after normalising what differs by nature
(pidfd inode numbers, times, pids, the product name in GetInfo).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.differential import Transcript, assert_same_as_252
from harness.rootfs import busybox_root
from harness.system import PYMACHINED, REFERENCE_257, System, system
from harness.trixie import IMAGE_SOCKET, MACHINE_SOCKET, ensure_trixie_root, varlinkctl
from harness.varlink_raw import raw_call, raw_call_as

PATTERNS = [
    (re.compile(r'"pidfdId":\d+'), '"pidfdId":N'),
    (re.compile(r'"(realtime|monotonic|creationTimestamp|modificationTimestamp)":\d+'), r'"\1":N'),
    (re.compile(r'"pidfdId": \d+'), '"pidfdId": N'),
    (re.compile(r'"(realtime|monotonic|creationTimestamp|modificationTimestamp)" ?: ?\d+'), r'"\1":N'),
    (re.compile(r'"(vendor|product|version)":"[^"]*"'), r'"\1":"…"'),
]


@pytest.fixture(scope="module", autouse=True)
def trixie_root() -> Path:
    return ensure_trixie_root()


def call(t: Transcript, socket: str, method: str, parameters: dict[str, Any] | None = None, **flags: bool) -> None:
    """A raw call, recorded with its exact reply bytes (streamed replies sorted by machine or image name)."""
    message: dict[str, Any] = {"method": method}
    if parameters is not None:
        message["parameters"] = parameters
    message.update(flags)
    reply = raw_call(socket, message)
    if flags.get("more"):
        # hash order in machined: compare the set of replies, and that only the last one ends the stream
        lines = reply.splitlines()
        ended = [',"continues":true}' not in line for line in lines]
        shape = "continues on all but the last" if ended == [False] * (len(lines) - 1) + [True] else str(ended)
        body = sorted((line.replace(',"continues":true}', "}") for line in lines), key=_name_of)
        reply = "\n".join([*body, f"({len(lines)} replies, {shape})"])
    t.note(json.dumps(message), reply)


def _name_of(line: str) -> str:
    try:
        return str(json.loads(line).get("parameters", {}).get("name", "~"))
    except ValueError:
        return "~"


def varlinkctl_step(t: Transcript, *argv: str) -> None:
    result = varlinkctl(*argv)
    t.note("varlinkctl " + " ".join(argv), f"rc={result.returncode}\n{result.stdout}{result.stderr}")


def nobody(t: Transcript, socket: str, method: str, parameters: dict[str, Any]) -> None:
    message = {"method": method, "parameters": parameters}
    t.note(f"as 65534: {json.dumps(message)}", raw_call_as(socket, message))


def test_machine_api_same_as_257(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        foo = t.leader("machine-foo.scope")
        t.manager("RegisterMachine", "sayssus", "foo", 0, "", "container", foo.pid, "")
        userns = s.userns_leader("machine-userns.scope", "0 100000 65536")
        t.leaders.append(userns.pid)
        t.manager("RegisterMachine", "sayssus", "userns", 0, "", "container", userns.pid, "")
        list_ = "io.systemd.Machine.List"
        call(t, MACHINE_SOCKET, list_, {})
        call(t, MACHINE_SOCKET, list_)
        call(t, MACHINE_SOCKET, list_, {}, more=True)
        for parameters in (
            {"name": "foo"},
            {"name": ".host"},
            {"pid": {"pid": foo.pid}},
            {"pid": foo.pid},
            {"pid": {"pid": 0}},
            {"pid": {"pid": 1}},
            {"pid": {"pid": -1}},
            {"pid": {"pid": foo.pid, "pidfdId": 12345}},
            {"name": "foo", "pid": {"pid": foo.pid}},
            {"name": ".host", "pid": {"pid": foo.pid}},
            {"name": "foo", "acquireMetadata": "yes"},
            {"name": "foo", "acquireMetadata": "graceful"},
            {"name": "foo", "acquireMetadata": "no"},
            {"name": "userns", "acquireMetadata": "graceful"},
            {"name": "foo", "acquireMetadata": "maybe"},
            {"name": "nosuch"},
            {"name": "../x"},
            {"name": ""},
            {"name": "foo", "allowInteractiveAuthentication": True},
            {"name": "foo", "bogus": 1},
            {"name": 5},
            {"name": None},
        ):
            call(t, MACHINE_SOCKET, list_, parameters)
        call(t, MACHINE_SOCKET, list_, {"name": "nosuch"}, more=True)
        # Register, then Unregister
        bar = t.leader("machine-bar.scope")
        register = "io.systemd.Machine.Register"
        call(t, MACHINE_SOCKET, register, {"name": "bar", "class": "container", "leader": bar.pid})
        call(t, MACHINE_SOCKET, list_, {"name": "bar"})
        call(t, MACHINE_SOCKET, register, {"name": "foo", "class": "container", "leader": bar.pid})
        call(t, MACHINE_SOCKET, register, {"name": "bar2", "class": "container", "leader": bar.pid})
        baz = t.leader("machine-baz.scope")
        baz_parameters = {
            "name": "baz",
            "id": "0123456789abcdef0123456789abcdef",
            "service": "test",
            "class": "vm",
            "leaderProcessId": {"pid": baz.pid},
            "rootDirectory": "/",
        }
        call(t, MACHINE_SOCKET, register, baz_parameters)
        call(t, MACHINE_SOCKET, list_, {"name": "baz"})
        q = t.leader("machine-q1.scope")
        for parameters in (
            {"name": "one", "class": "container", "leader": 1},
            {"name": "q1", "class": "bogus", "leader": q.pid},
            {"name": "q1", "class": "host", "leader": q.pid},
            {"name": "q1", "class": "container", "id": "xyz", "leader": q.pid},
            {"name": "../x", "class": "container", "leader": q.pid},
            {"name": ".host", "class": "container", "leader": q.pid},
            {"name": "q1", "leader": q.pid},
            {"class": "container", "leader": q.pid},
            {"name": None, "class": "container", "leader": q.pid},
            {"name": "q1", "class": None, "leader": q.pid},
            {"name": "q1", "class": "container", "leader": 999999},
            {"name": "q1", "class": "container", "leader": 0},
            {"name": "q1", "class": "container", "leader": q.pid, "leaderProcessId": {"pid": foo.pid}},
            {"name": "q1", "class": "container", "leader": q.pid, "rootDirectory": "rel/dir"},
            {"name": "q1", "class": "container", "leader": q.pid, "ifIndices": [-1]},
            {"name": "q1", "class": "container", "leader": q.pid, "vSockCid": 1},
            {"name": "noleader", "class": "container"},
            {"name": "q1", "class": "container", "id": "00000000000000000000000000000000", "leader": q.pid},
        ):
            call(t, MACHINE_SOCKET, register, parameters)
        call(t, MACHINE_SOCKET, list_, {"name": "q1"})
        unregister = "io.systemd.Machine.Unregister"
        for parameters in ({"name": "bar"}, {"name": "nosuch"}, {"name": "../x"}, {}, {"name": ".host"}):
            call(t, MACHINE_SOCKET, unregister, parameters)
        call(t, MACHINE_SOCKET, list_, {"name": "bar"})
        call(t, MACHINE_SOCKET, list_, {"name": ".host"})
        kill = "io.systemd.Machine.Kill"
        for parameters in (
            {"name": "foo", "whom": "everyone", "signal": 0},
            {"name": "foo"},
            {"name": "foo", "signal": None},
            {"name": "foo", "signal": 999},
            {"name": "nosuch", "signal": 18},
            {"name": "foo", "whom": "leader", "signal": 18},
            {"name": ".host", "signal": 18},
        ):
            call(t, MACHINE_SOCKET, kill, parameters)
        for parameters in ({"name": "nosuch"}, {"name": ".host"}):
            call(t, MACHINE_SOCKET, "io.systemd.Machine.Terminate", parameters)
        open_ = "io.systemd.Machine.Open"
        for parameters in (
            {"name": "foo", "mode": "bogus"},
            {"name": "foo"},
            {"name": "nosuch", "mode": "tty"},
        ):
            call(t, MACHINE_SOCKET, open_, parameters)
        # 257's own client
        varlinkctl_step(t, "call", MACHINE_SOCKET, list_, '{"name":"foo"}')
        varlinkctl_step(t, "call", MACHINE_SOCKET, list_, '{"name":"nosuch"}')
        varlinkctl_step(t, "call", MACHINE_SOCKET, list_, '{"name":"../x"}')
        varlinkctl_step(t, "call", MACHINE_SOCKET, kill, '{"name":"foo","signal":0}')
        varlinkctl_step(t, "call", "--more", MACHINE_SOCKET, list_, '{"name":"userns"}')
        # as an unprivileged user
        nobody(t, MACHINE_SOCKET, list_, {"name": "foo"})
        for method, parameters in (
            (register, {"name": "q2", "class": "container", "leader": q.pid}),
            ("io.systemd.Machine.Terminate", {"name": "foo"}),
            (kill, {"name": "foo", "signal": 18}),
            (unregister, {"name": "foo"}),
            (open_, {"name": "foo", "mode": "tty"}),
            ("io.systemd.Machine.Terminate", {"name": "nosuch"}),
        ):
            nobody(t, MACHINE_SOCKET, method, parameters)

    assert_same_as_252(scenario, tmp_path, PATTERNS, reference=REFERENCE_257)


def test_image_api_same_as_257(tmp_path: Path) -> None:
    def scenario(s: System, t: Transcript) -> None:
        list_ = "io.systemd.MachineImage.List"
        call(t, IMAGE_SOCKET, list_, {})
        img = Path("/var/lib/machines/img1")
        busybox_root(img, os_id="testos")
        (img / "etc/hostname").write_text("img1host\n")
        (img / "etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n")
        (img / "etc/machine-info").write_text("PRETTY_HOSTNAME=Image One\n")
        for parameters in (
            {"name": "img1"},
            {"name": "img1", "acquireMetadata": "yes"},
            {"name": "img1", "acquireMetadata": "graceful"},
            {"name": "nosuch"},
            {"name": "../x"},
        ):
            call(t, IMAGE_SOCKET, list_, parameters)
        update, clone, remove = (f"io.systemd.MachineImage.{m}" for m in ("Update", "Clone", "Remove"))
        for method, parameters in (
            (update, {"name": "img1", "newName": "img2"}),
            (update, {"name": "img2", "newName": "../y"}),
            (update, {"name": "nosuch", "readOnly": True}),
            (update, {"name": "img2", "readOnly": True}),
            (list_, {"name": "img2"}),
            (update, {"name": "img2", "readOnly": False}),
            (update, {"name": "img2"}),
            (update, {"name": "img2", "limit": 1073741824}),
            (clone, {"name": "img2", "newName": "img3"}),
            (clone, {"name": "img2", "newName": "img3"}),
            (clone, {"name": "img2", "newName": "img4", "readOnly": True}),
            (clone, {"name": "nosuch", "newName": "img5"}),
            (list_, {"name": "img4"}),
            (remove, {"name": "img3"}),
            (remove, {"name": "img4"}),
            (remove, {"name": "nosuch"}),
            (remove, {"name": ".host"}),
        ):
            call(t, IMAGE_SOCKET, method, parameters)
        nobody(t, IMAGE_SOCKET, remove, {"name": "img2"})
        varlinkctl_step(t, "call", IMAGE_SOCKET, list_, '{"name":"img2"}')
        varlinkctl_step(t, "call", IMAGE_SOCKET, list_, '{"name":"nosuch"}')

    assert_same_as_252(scenario, tmp_path, PATTERNS, reference=REFERENCE_257)


def _symbols(description: str) -> set[str]:
    """The IDL's interface line and symbol blocks, documentation comments left out."""
    lines = [line for line in description.splitlines() if not line.lstrip().startswith("#") or "flag]" in line]
    return {block.strip() for block in "\n".join(lines).split("\n\n") if block.strip()}


def test_introspection_covers_257(tmp_path: Path) -> None:
    """Every interface, type, method and error 257 declares, pymachined declares the same (and adds newer ones)."""
    descriptions: dict[str, dict[str, set[str]]] = {}
    interfaces: dict[str, list[str]] = {}
    for implementation in (REFERENCE_257, PYMACHINED):
        workdir = tmp_path / implementation.name
        workdir.mkdir()
        with system(implementation, workdir):
            info = varlinkctl("info", "--json=short", MACHINE_SOCKET)
            assert info.returncode == 0, info.stderr
            names = json.loads(info.stdout)["interfaces"]
            interfaces[implementation.name] = names
            descriptions[implementation.name] = {}
            for name in names:
                result = varlinkctl("introspect", MACHINE_SOCKET, name)
                assert result.returncode == 0, result.stderr
                descriptions[implementation.name][name] = _symbols(result.stdout)
    theirs, ours = interfaces["machined257"], interfaces["pymachined"]
    assert set(theirs) <= set(ours) and ours == sorted(ours)
    assert set(ours) - set(theirs) == {"io.systemd.service"}
    for name in theirs:
        missing = descriptions["machined257"][name] - descriptions["pymachined"][name]
        assert not missing, f"{name}: pymachined lacks or differs in:\n" + "\n\n".join(sorted(missing))
