"""Coroutines started at once: they run up to their first wait in the caller, a task takes the rest.

asyncio.create_task() runs nothing before the next turn of the event loop. Most of the daemon's
coroutines (a D-Bus handler whose caller's credentials are cached, a release with no job to wait for)
finish without ever waiting and would pay for a task and a loop turn for nothing. Python 3.12's eager
task factory does this for every task; the daemon supports 3.11, so it does it where it matters.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Awaitable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """What a coroutine returned without waiting."""

    value: T


def start(coro: Coroutine[Any, Any, T]) -> Done[T] | Awaitable[T]:
    """Run `coro` until it first waits: Done(result) if it finished (what it raised propagates), else
    an awaitable of the rest, to be awaited by a task."""
    try:
        suspended = coro.send(None)
    except StopIteration as done:
        return Done(done.value)
    return _resume(coro, suspended)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], suspended: Any) -> Generator[Any, Any, T]:
    """The rest of what `await coro` would have done, for a coroutine that yielded `suspended` (what
    it waits for) to the task that will drive it."""
    while True:
        try:
            sent = yield suspended
        except BaseException as exc:  # noqa: BLE001 - cancellation and all: the coroutine decides
            try:
                suspended = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                suspended = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


_background: set[asyncio.Task[Any]] = set()  # referenced until done: the loop keeps only weak references


def spawn(coro: Coroutine[Any, Any, None], what: str) -> None:
    """Fire and forget `coro`, started at once; a failure is logged with `what`."""
    try:
        started = start(coro)
    except Exception:
        log.exception("%s failed", what)
        return
    if isinstance(started, Done):
        return
    task = asyncio.ensure_future(_logged(started, what))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _logged(rest: Awaitable[None], what: str) -> None:
    try:
        await rest
    except Exception:
        log.exception("%s failed", what)
