"""Varlink's transport: listening and connected Unix sockets driven by event-loop callbacks.

No asyncio streams and no task per connection: accept() runs in the listener's reader callback, a
message is handled from the connection's reader callback, and a handler that finishes without waiting
(most do) is answered right there. Only a handler that waits gets a task, and while it runs the
connection reads nothing more, as sd-varlink handles one call per connection at a time.
"""

from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from .. import eager

log = logging.getLogger(__name__)

RECEIVE_SIZE: Final = 64 * 1024
HIGH_WATER: Final = 64 * 1024  # a sender waits while more than this is queued...
LOW_WATER: Final = 16 * 1024  # ...until no more than this is
ACCEPT_BATCH: Final = 128
ACCEPT_RETRY_DELAY: Final = 1.0  # after EMFILE and friends, as asyncio's own listeners do
ACCEPT_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# What the server does with one message: False to close the connection once the answer is out.
MessageHandler = Callable[["Connection", bytes], Coroutine[Any, Any, bool]]


@dataclass(frozen=True, slots=True)
class Peer:
    """The peer's credentials as SO_PEERCRED reported them at accept()."""

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> Peer:
    """Read SO_PEERCRED of a connected AF_UNIX socket."""
    pid, uid, gid = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("iII")))
    return Peer(pid, uid, gid)


class ClientGone(Exception):
    """The peer went away while we were writing."""


class Connection:
    """One connected socket: splits what arrives at NUL bytes and writes replies, queueing what the
    peer is too slow to take."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        peer: Peer,
        handle: MessageHandler,
        on_close: Callable[[Connection], None],
        buffer_max: int,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.handle = handle
        self.on_close = on_close
        self.buffer_max = buffer_max
        self.inbox = bytearray()
        self.scanned = 0  # bytes of inbox known to hold no NUL
        self.eof = False
        self.outbox = bytearray()
        self.outbox_fds: list[int] = []  # duplicates, to go with the outbox's first byte
        self.writing = False
        self.drained: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.closed = False
        loop.add_reader(self.fd, self._readable)

    # Reading.

    def _readable(self) -> None:
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if not data:
            self.eof = True
            self.loop.remove_reader(self.fd)
        elif not self.inbox and data.find(0) == len(data) - 1:
            # The common case: exactly one whole message.
            self._handle(data[:-1])
            return
        else:
            self.inbox += data
        self._process()

    def _process(self) -> None:
        """Handle the complete messages queued, one at a time; close at EOF or an oversized message."""
        while self.task is None and not self.closing:
            end = self.inbox.find(0, self.scanned)
            if end < 0:
                self.scanned = len(self.inbox)
                if self.eof:
                    self.close()  # a trailing partial message is dropped
                elif self.scanned > self.buffer_max:
                    log.debug("Peer sent more than %d bytes without a NUL, disconnecting.", self.buffer_max)
                    self.close()
                return
            frame = bytes(self.inbox[:end])
            del self.inbox[: end + 1]
            self.scanned = 0
            self._handle(frame)

    def _handle(self, frame: bytes) -> None:
        started = eager.start(self.handle(self, frame))
        if isinstance(started, eager.Done):
            if not started.value:
                self.close()
            return
        if not self.eof:
            self.loop.remove_reader(self.fd)  # nothing more is read until this call is answered
        self.task = asyncio.ensure_future(self._finish(started))

    async def _finish(self, rest: Any) -> None:
        keep = await rest
        self.task = None
        if not keep:
            self.close()
        elif not self.closing:
            if not self.eof:
                self.loop.add_reader(self.fd, self._readable)
            self._process()

    # Writing.

    @property
    def queued(self) -> int:
        """Bytes written but not yet taken by the peer."""
        return len(self.outbox)

    def write(self, data: bytes, fds: list[int] | None = None) -> None:
        """Send `data` now as far as the socket takes it and queue the rest; fds (SCM_RIGHTS) go with its
        first byte, so the caller waits for an empty queue before writing with fds. Raises ClientGone."""
        if self.closed or self.closing:
            raise ClientGone()
        if self.outbox:
            self.outbox += data
            return
        try:
            if fds:
                sent = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
            if fds:
                self.outbox_fds = [os.dup(fd) for fd in fds]
        except OSError as error:
            self.abort()
            raise ClientGone() from error
        if sent < len(data):
            self.outbox += data[sent:]
            self._want_writable()

    async def drain(self, limit: int = LOW_WATER) -> None:
        """Wait until at most `limit` bytes are queued. Raises ClientGone."""
        while len(self.outbox) > limit:
            if self.closed:
                raise ClientGone()
            self.drained = self.loop.create_future()
            await self.drained

    def _want_writable(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        fds = self.outbox_fds
        try:
            if fds:
                sent = self.sock.sendmsg([self.outbox], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                self.outbox_fds = []
                close_fds(fds)
            else:
                sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        del self.outbox[:sent]
        if not self.outbox:
            self.writing = False
            self.loop.remove_writer(self.fd)
            if self.closing:
                self.abort()
                return
        if self.drained is not None and len(self.outbox) <= LOW_WATER:
            if not self.drained.done():
                self.drained.set_result(None)
            self.drained = None

    # Closing.

    def close(self) -> None:
        """Close once what is queued has been sent."""
        if self.closed or self.closing:
            return
        self.closing = True
        if not self.eof:
            self.loop.remove_reader(self.fd)
        if not self.outbox:
            self.abort()

    def abort(self) -> None:
        """Close now, dropping what is queued; a running handler is cancelled."""
        if self.closed:
            return
        self.closed = self.closing = True  # calls still queued are dropped
        self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        close_fds(self.outbox_fds)
        self.sock.close()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ClientGone())
            self.drained.exception()  # retrieved here: nobody may be left to await it
        if self.task is not None and asyncio.current_task() is not self.task:
            self.task.cancel()
        self.on_close(self)


class Listener:
    """A listening socket whose reader callback accepts every pending connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, accept: Callable[[socket.socket], None]):
        self.loop = loop
        self.sock = sock
        self.accept = accept
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._acceptable)

    def _acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as error:
                if error.errno not in ACCEPT_RESOURCE_ERRORS:
                    raise
                log.warning("Failed to accept a Varlink connection: %s; retrying in %.0f s.", error, ACCEPT_RETRY_DELAY)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            self.accept(conn)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._acceptable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


def close_fds(fds: list[int]) -> None:
    """Close every fd in `fds` (ignoring errors) and empty the list."""
    for fd in fds:
        with suppress(OSError):
            os.close(fd)
    fds.clear()
