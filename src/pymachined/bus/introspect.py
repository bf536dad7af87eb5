"""Introspection XML in sd-bus's exact format."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .vtable import Interface, Method, Property, Signal

HEADER: Final = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"https://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
    "<node>\n"
    ' <interface name="org.freedesktop.DBus.Peer">\n'
    '  <method name="Ping"/>\n'
    '  <method name="GetMachineId">\n'
    '   <arg type="s" name="machine_uuid" direction="out"/>\n'
    "  </method>\n"
    " </interface>\n"
    ' <interface name="org.freedesktop.DBus.Introspectable">\n'
    '  <method name="Introspect">\n'
    '   <arg name="xml_data" type="s" direction="out"/>\n'
    "  </method>\n"
    " </interface>\n"
    ' <interface name="org.freedesktop.DBus.Properties">\n'
    '  <method name="Get">\n'
    '   <arg name="interface_name" direction="in" type="s"/>\n'
    '   <arg name="property_name" direction="in" type="s"/>\n'
    '   <arg name="value" direction="out" type="v"/>\n'
    "  </method>\n"
    '  <method name="GetAll">\n'
    '   <arg name="interface_name" direction="in" type="s"/>\n'
    '   <arg name="props" direction="out" type="a{sv}"/>\n'
    "  </method>\n"
    '  <method name="Set">\n'
    '   <arg name="interface_name" direction="in" type="s"/>\n'
    '   <arg name="property_name" direction="in" type="s"/>\n'
    '   <arg name="value" direction="in" type="v"/>\n'
    "  </method>\n"
    '  <signal name="PropertiesChanged">\n'
    '   <arg type="s" name="interface_name"/>\n'
    '   <arg type="a{sv}" name="changed_properties"/>\n'
    '   <arg type="as" name="invalidated_properties"/>\n'
    "  </signal>\n"
    " </interface>\n"
)
PRIVILEGED: Final = '   <annotation name="org.freedesktop.systemd1.Privileged" value="true"/>\n'


def _arg(type_: str, name: str | None, direction: str | None) -> str:
    text = f'   <arg type="{type_}"'
    if name:
        text += f' name="{name}"'
    if direction:
        text += f' direction="{direction}"'
    return text + "/>\n"


def interface_xml(interface: Interface) -> str:
    out = [f' <interface name="{interface.name}">\n']
    for member in interface.members:
        if isinstance(member, Property):
            if member.hidden:
                continue
            access = "readwrite" if member.setter else "read"
            out.append(f'  <property name="{member.name}" type="{member.type}" access="{access}">\n')
            if member.emits_change != "true":
                out.append(
                    '   <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" '
                    f'value="{member.emits_change}"/>\n'
                )
            if member.setter and member.privileged:
                out.append(PRIVILEGED)
            out.append("  </property>\n")
        elif isinstance(member, Method):
            out.append(f'  <method name="{member.name}">\n')
            out.extend(_arg(a.type, a.name, "in") for a in member.in_args)
            out.extend(_arg(a.type, a.name, "out") for a in member.out_args)
            if member.privileged:
                out.append(PRIVILEGED)
            out.append("  </method>\n")
        elif isinstance(member, Signal):
            out.append(f'  <signal name="{member.name}">\n')
            out.extend(_arg(a.type, a.name, None) for a in member.args)
            out.append("  </signal>\n")
    out.append(" </interface>\n")
    return "".join(out)


def node_xml(interfaces: Iterable[Interface], children: Iterable[str]) -> str:
    """The full Introspect() reply for one object."""
    parts = [HEADER]
    parts.extend(interface_xml(i) for i in interfaces)
    parts.extend(f' <node name="{child}"/>\n' for child in children)
    parts.append("</node>\n")
    return "".join(parts)
