"""Coroutines started at once: finished ones need no task, waiting ones go on in one unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pymachined import eager


async def _quick(log: list[str]) -> str:
    log.append("ran")
    return "done"


async def _waits(fut: asyncio.Future[str], log: list[str]) -> str:
    log.append("before")
    value = await fut
    log.append("after")
    return value * 2


def test_a_coroutine_that_never_waits_finishes_in_the_caller() -> None:
    async def main() -> None:
        log: list[str] = []
        started = eager.start(_quick(log))
        assert log == ["ran"]  # no turn of the event loop needed
        assert isinstance(started, eager.Done) and started.value == "done"

    asyncio.run(main())


def test_a_waiting_coroutine_goes_on_in_a_task() -> None:
    async def main() -> None:
        log: list[str] = []
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        started = eager.start(_waits(fut, log))
        assert log == ["before"] and not isinstance(started, eager.Done)
        task: asyncio.Task[Any] = asyncio.ensure_future(started)
        await asyncio.sleep(0)
        assert log == ["before"]
        fut.set_result("ab")
        assert await task == "abab" and log == ["before", "after"]

    asyncio.run(main())


def test_errors_and_cancellation_reach_the_coroutine() -> None:
    async def fails_at_once() -> None:
        raise ValueError("now")

    async def cleans_up(fut: asyncio.Future[None], log: list[str]) -> None:
        try:
            await fut
        except asyncio.CancelledError:
            log.append("cancelled")
            raise

    async def main() -> None:
        with pytest.raises(ValueError, match="now"):
            eager.start(fails_at_once())
        log: list[str] = []
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started = eager.start(cleans_up(fut, log))
        assert not isinstance(started, eager.Done)
        task = asyncio.ensure_future(started)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["cancelled"]

    asyncio.run(main())


def test_spawn_logs_failures_and_keeps_waiting_ones_alive(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_later(fut: asyncio.Future[None]) -> None:
        await fut
        raise RuntimeError("later")

    async def main() -> None:
        eager.spawn(_quick([]), "quick")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        eager.spawn(fails_later(fut), "the slow one")
        assert len(eager._background) == 1
        fut.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not eager._background

    asyncio.run(main())
    assert "the slow one failed" in caplog.text
