"""Local addresses of a network namespace, read over rtnetlink without forking.

Each namespace gets two rtnetlink sockets, opened once: one to dump its addresses, one subscribed to
its address changes. The dump is kept until the second socket has anything to read (or overflowed),
so an answer is a non-blocking receive when nothing changed, and never older than the last change the
kernel announced before the call.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Final

from ..errors import ErrorKind, MachineError, failed, not_supported
from ..machine import Machine, MachineClass
from .namespaces import CLONE_NEWNET, setns
from .sharing import Sharing

NETLINK_ROUTE: Final = 0
RTM_GETADDR: Final = 22
RTM_NEWADDR: Final = 20
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
NLMSG_DONE: Final = 3
NLMSG_ERROR: Final = 2
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFA_FLAGS: Final = 8
IFA_RT_PRIORITY: Final = 9
IFA_F_DEPRECATED: Final = 0x20
RT_SCOPE_HOST: Final = 254
RT_SCOPE_NOWHERE: Final = 255
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV6_IFADDR: Final = 0x100


@dataclass(frozen=True, slots=True, order=True)
class LocalAddress:
    family: int
    address: bytes
    ifindex: int
    scope: int
    metric: int = 0


def _sort_key(a: LocalAddress) -> tuple[int, int, int, int, bytes]:
    # IPv4 before IPv6, lowest scope, lowest route metric, lowest interface index, then the bytes
    return (0 if a.family == socket.AF_INET else 1, a.scope, a.metric, a.ifindex, a.address)


def _unique_sorted(found: list[LocalAddress]) -> list[LocalAddress]:
    result: list[LocalAddress] = []
    for address in sorted(found, key=_sort_key):
        if not result or _sort_key(result[-1]) != _sort_key(address):
            result.append(address)
    return result


def dump_addresses(sock: socket.socket) -> list[LocalAddress]:
    """RTM_GETADDR dump on a bound rtnetlink socket, filtered as systemd's local_addresses()."""
    seq = 1
    request = struct.pack("=LHHLL", 16 + 8, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    request += struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)
    sock.send(request)
    found: list[LocalAddress] = []
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, msg_type, _flags, _seq, _pid = struct.unpack_from("=LHHLL", data, offset)
            if length < 16:
                return found
            if msg_type == NLMSG_DONE:
                return _unique_sorted(found)
            if msg_type == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + 16)
                if code:
                    raise OSError(-code, os.strerror(-code))
            elif msg_type == RTM_NEWADDR:
                parsed = _parse_addr(data[offset + 16 : offset + length])
                if parsed is not None:
                    found.append(parsed)
            offset += (length + 3) & ~3


def _parse_addr(payload: bytes) -> LocalAddress | None:
    family, _prefixlen, flags, scope, ifindex = struct.unpack_from("=BBBBI", payload, 0)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs: dict[int, bytes] = {}
    offset = 8
    while offset + 4 <= len(payload):
        rta_len, rta_type = struct.unpack_from("=HH", payload, offset)
        if rta_len < 4:
            break
        attrs[rta_type] = payload[offset + 4 : offset + rta_len]
        offset += (rta_len + 3) & ~3
    if IFA_FLAGS in attrs and len(attrs[IFA_FLAGS]) >= 4:
        flags = struct.unpack("=I", attrs[IFA_FLAGS][:4])[0]
    if flags & IFA_F_DEPRECATED or scope in (RT_SCOPE_HOST, RT_SCOPE_NOWHERE):
        return None
    address = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    size = 4 if family == socket.AF_INET else 16
    if address is None or len(address) != size:
        return None
    metric = struct.unpack("=I", attrs[IFA_RT_PRIORITY][:4])[0] if len(attrs.get(IFA_RT_PRIORITY, b"")) >= 4 else 0
    return LocalAddress(family=family, address=address, ifindex=ifindex, scope=scope, metric=metric)


def _netlink_socket(groups: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, groups))
    return sock


@dataclass(eq=False, slots=True)
class _Namespace:
    """The sockets of one network namespace and its last dump."""

    query: socket.socket
    changes: socket.socket  # non-blocking, member of the address groups: readable = the dump is stale
    lock: threading.Lock
    dump: list[LocalAddress] | None = None

    def current(self) -> list[LocalAddress]:
        with self.lock:
            if _drained_any(self.changes) or self.dump is None:
                self.dump = dump_addresses(self.query)
            return self.dump

    def close(self) -> None:
        self.query.close()
        self.changes.close()


def _drained_any(sock: socket.socket) -> bool:
    """Read everything queued on a non-blocking socket; whether there was anything (or an overflow)."""
    seen = False
    while True:
        try:
            if not sock.recv(65536):
                return seen
        except BlockingIOError:
            return seen
        except OSError as error:
            if error.errno != errno.ENOBUFS:
                raise
        seen = True


class AddressReader:
    """The sockets of every network namespace asked about, kept until its machines go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._namespaces: dict[int, _Namespace] = {}
        self._owners: Sharing[int] = Sharing()  # machine name → namespace inode

    def addresses(self, machine: Machine, ns_path: str, ino: int) -> list[LocalAddress]:
        """Current addresses of the namespace at `ns_path` (inode `ino`). Only netlink and /proc: nothing
        that can hang."""
        stale = None
        with self._lock:
            namespace = self._namespaces.get(ino)
            if namespace is None:
                namespace = _open_in_netns(ns_path)
                self._namespaces[ino] = namespace
            old = self._owners.use(machine.name, ino)
            if old is not None:
                stale = self._namespaces.pop(old, None)  # the leader moved: do not pin the old namespace
        if stale is not None:
            stale.close()
        return namespace.current()

    def forget(self, machine: Machine) -> None:
        """Close the sockets of a machine that went away (an open socket would pin its namespace)."""
        with self._lock:
            ino = self._owners.release(machine.name)
            if ino is None:
                return
            namespace = self._namespaces.pop(ino, None)
        if namespace is not None:
            namespace.close()

    def close(self) -> None:
        with self._lock:
            for namespace in self._namespaces.values():
                namespace.close()
            self._namespaces.clear()
            self._owners.clear()


_setns_lock = threading.Lock()


def _open_in_netns(ns_path: str) -> _Namespace:
    """Netlink sockets created while this thread visits the namespace; they stay bound to it."""
    target = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _setns_lock:
            setns(target, CLONE_NEWNET)
            try:
                # subscribed before the first dump, so no change can fall between the two
                changes = _netlink_socket(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
                try:
                    query = _netlink_socket()
                except BaseException:
                    changes.close()
                    raise
            finally:
                setns(own, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)
    changes.setblocking(False)
    return _Namespace(query, changes, threading.Lock())


def host_addresses() -> list[LocalAddress]:
    with _netlink_socket() as sock:
        return dump_addresses(sock)


# read at start-up: a thread visiting a namespace changes what /proc/self/ns/net shows meanwhile
_OWN_NETNS: Final = os.stat("/proc/self/ns/net").st_ino


def machine_addresses(machine: Machine, reader: AddressReader) -> list[LocalAddress]:
    """GetAddresses: only netlink and /proc, quick enough for the event loop."""
    if machine.machine_class is MachineClass.HOST:
        return host_addresses()
    if machine.machine_class is not MachineClass.CONTAINER:
        raise not_supported("Requesting IP address data is only supported on container machines.")
    try:
        ns_path = f"/proc/{machine.leader}/ns/net"
        ino = os.stat(ns_path).st_ino
        if ino == _OWN_NETNS:
            raise MachineError(
                ErrorKind.NO_PRIVATE_NETWORKING, f"Machine {machine.name} does not use private networking"
            )
        return reader.addresses(machine, ns_path, ino)
    except MachineError:
        raise
    except OSError:
        raise failed("Child died abnormally.") from None
