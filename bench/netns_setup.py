"""Give network namespaces an address: `netns_setup.py PID=ADDR/PREFIX ...` (run as a child process).

For each PID: enter its network namespace (setns) and, with ioctls on a socket made there, put ADDR on
`host0` (the veth end the caller moved in) and bring it and `lo` up. One process for all namespaces, no
`ip`/`nsenter` per namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def setns(pid: int) -> None:
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def sockaddr(ifname: bytes, address: str) -> bytes:
    return struct.pack("16sH2s4s8s", ifname, socket.AF_INET, b"\0\0", socket.inet_aton(address), b"\0" * 8)


def up(sock: socket.socket, ifname: bytes) -> None:
    flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sh22s", ifname, 0, b""))[:18])[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22s", ifname, flags | IFF_UP, b""))


def configure(pid: int, cidr: str) -> None:
    address, prefix = cidr.split("/")
    mask = socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF))
    setns(pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCSIFADDR, sockaddr(b"host0", address) + b"\0" * 8)
        fcntl.ioctl(sock, SIOCSIFNETMASK, sockaddr(b"host0", mask) + b"\0" * 8)
        up(sock, b"host0")
        up(sock, b"lo")


def main(args: list[str]) -> int:
    for arg in args:
        pid, cidr = arg.split("=")
        configure(int(pid), cidr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
