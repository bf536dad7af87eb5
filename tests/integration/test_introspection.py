"""Introspection XML byte for byte as systemd-machined 252 serves it (members implemented so far)."""

from __future__ import annotations

import json
import re

from harness.system import REPO, System

# captured from the real systemd-machined 252 (Debian 12, 252.39-1~deb12u2)
CAPTURED = REPO / "tests/data/machined-252-introspection"

# Members of 252's interfaces that later issues add; each disappears from here as it lands.
NOT_YET = {
    "org.freedesktop.machine1.Manager": set(),
    "org.freedesktop.machine1.Machine": {},
}
NOT_YET_NODES: set[str] = set()
# Members newer than 252 that pymachined adds; stripped from its XML before comparing with 252's.
NEWER = {"CreateMachineEx", "RegisterMachineEx", "GetMachineSSHInfo", "GetSSHInfo"}


def reference(name: str) -> str:
    return (CAPTURED / name).read_text()


def without_newer(xml: str) -> str:
    for member in NEWER:
        xml, count = re.subn(rf'  <method name="{member}">\n(?:   .*\n)*?  </method>\n', "", xml)
    return xml


def without_unimplemented(xml: str) -> str:
    for members in NOT_YET.values():
        for member in members:
            xml = re.sub(rf'  <method name="{member}">\n(?:   .*\n)*?  </method>\n', "", xml)
    for node in NOT_YET_NODES:
        xml = xml.replace(f' <node name="{node}"/>\n', "")
    return xml


def introspect(system: System, path: str) -> str:
    result = system.busctl(
        "--json=short", "call", "org.freedesktop.machine1", path, "org.freedesktop.DBus.Introspectable", "Introspect"
    )
    assert result.returncode == 0, result.output
    return json.loads(result.stdout)["data"][0]  # type: ignore[no-any-return]


def test_manager_object(machined: System) -> None:
    expected = without_unimplemented(reference("org_freedesktop_machine1.xml"))
    ours = introspect(machined, "/org/freedesktop/machine1")
    assert without_newer(ours) == expected
    for member in ("CreateMachineEx", "RegisterMachineEx", "GetMachineSSHInfo"):
        assert f'<method name="{member}">' in ours


def test_machine_objects(machined: System) -> None:
    for name in ("foo", "bar", "baz"):
        machined.register(name, machined.spawn_leader(f"machine-{name}.scope"))
    expected = without_unimplemented(reference("org_freedesktop_machine1_machine__2ehost.xml"))
    assert without_newer(introspect(machined, "/org/freedesktop/machine1/machine/_2ehost")) == expected
    assert without_newer(introspect(machined, "/org/freedesktop/machine1/machine/foo")) == expected
    listing = introspect(machined, "/org/freedesktop/machine1/machine")
    reference_listing = reference("org_freedesktop_machine1_machine.xml")
    node = re.compile(r' <node name="[^"]+"/>\n')
    assert node.sub("", listing) == node.sub("", reference_listing)
    assert sorted(node.findall(listing)) == sorted(node.findall(reference_listing))


def test_intermediate_nodes(machined: System) -> None:
    assert introspect(machined, "/") == reference("root.xml")
    assert introspect(machined, "/org") == reference("org.xml")
    assert introspect(machined, "/org/freedesktop") == without_unimplemented(reference("org_freedesktop.xml"))


def test_unknown_paths(machined: System) -> None:
    for path in ("/org/freedesktop/machine1/machine/nosuch", "/org/freedesktop/nope", "/org/freedesktop/machine1/x"):
        result = machined.busctl(
            "call", "org.freedesktop.machine1", path, "org.freedesktop.DBus.Introspectable", "Introspect"
        )
        assert result.returncode == 1
        assert result.stderr == f"Call failed: Unknown object '{path}'.\n"


def test_image_objects(machined: System) -> None:
    expected = reference("org_freedesktop_machine1_image__2ehost.xml")
    assert introspect(machined, "/org/freedesktop/machine1/image/_2ehost") == expected
    assert introspect(machined, "/org/freedesktop/machine1/image") == reference("org_freedesktop_machine1_image.xml")


def test_log_control_object(machined: System) -> None:
    assert introspect(machined, "/org/freedesktop/LogControl1") == reference("org_freedesktop_LogControl1.xml")
