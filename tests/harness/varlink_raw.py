"""A raw Varlink client: exact request bytes out, exact reply bytes (and passed fds) back."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final


@dataclass(slots=True)
class RawReply:
    """The messages one call got back (NUL-split, decoded), how the exchange ended, and passed fds."""

    messages: list[str]
    ending: str = ""  # "" when the last message came; else what happened to the connection
    fds: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.messages + ([self.ending] if self.ending else []))

    def json(self) -> list[Any]:
        return [json.loads(m) for m in self.messages]

    def close_fds(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def raw_exchange(path: str, message: dict[str, Any] | bytes, timeout: float = 5) -> RawReply:
    """Send one request on a fresh connection; read replies until one without "continues"."""
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    result = RawReply([])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data + b"\0")
        buffer = b""
        try:
            while True:
                fds = array.array("i")
                chunk, ancillary, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(16 * fds.itemsize))
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
                result.fds.extend(fds)
                if not chunk:
                    result.ending = f"closed after {buffer!r}"
                    return result
                buffer += chunk
                while b"\0" in buffer:
                    one, buffer = buffer.split(b"\0", 1)
                    result.messages.append(one.decode())
                    if not json.loads(one).get("continues"):
                        return result
        except TimeoutError:
            result.ending = f"no reply within {timeout} s after {buffer!r}"
            return result


def raw_call(path: str, message: dict[str, Any] | bytes, timeout: float = 5) -> str:
    """The reply text of one call (several replies one per line), or what happened to the connection."""
    reply = raw_exchange(path, message, timeout)
    reply.close_fds()
    return reply.text


NOBODY: Final = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
_AS_OTHER: Final = (
    "import json,sys;sys.path.insert(0,sys.argv[1]);from harness.varlink_raw import raw_call;"
    "print(raw_call(sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])))"
)


def raw_call_as(
    socket_path: str,
    message: dict[str, Any],
    user: Sequence[str] = NOBODY,
    env: dict[str, str] | None = None,
    timeout: float = 20,
) -> str:
    """raw_call() made by another user (`user` is the setpriv prefix; uid 65534 unless told), from the
    system's python3, which every user may run (the venv's interpreter lives under /root)."""
    tests = str(Path(__file__).resolve().parents[1])
    argv = [*user, "/usr/bin/python3", "-c", _AS_OTHER, tests, socket_path, json.dumps(message), str(timeout)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"raw call as {' '.join(user)} failed: {result.stderr}")
    return result.stdout.strip()
