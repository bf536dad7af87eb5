"""Long-running work (copies, image clones and removals, pool cleaning): at most 64 at once, as 252."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from .errors import ErrorKind, MachineError

OPERATIONS_MAX: Final = 64
TOO_MANY_OPERATIONS: Final = "Too many ongoing operations."
TOO_MANY_COPIES: Final = "Too many ongoing copies."

T = TypeVar("T")


class Operations:
    """Counts running operations and refuses new ones beyond the limit; work runs off the event loop."""

    def __init__(self, limit: int = OPERATIONS_MAX) -> None:
        self.limit = limit
        self.running = 0

    def check(self, message: str = TOO_MANY_OPERATIONS) -> None:
        """Refuse up front (252 checks the limit before it reads the arguments)."""
        if self.running >= self.limit:
            raise MachineError(ErrorKind.LIMITS_EXCEEDED, message)

    async def run(self, work: Callable[[], T], message: str = TOO_MANY_OPERATIONS) -> T:
        """Run blocking `work` in a worker thread, counted as one operation."""
        self.check(message)
        self.running += 1
        try:
            return await asyncio.to_thread(work)
        finally:
            self.running -= 1

    async def run_async(self, work: Callable[[], Awaitable[T]], message: str = TOO_MANY_OPERATIONS) -> T:
        self.check(message)
        self.running += 1
        try:
            return await work()
        finally:
            self.running -= 1
