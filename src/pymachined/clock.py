"""The one source of time for the core, replaceable in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from .machine import Timestamp


def system_now() -> Timestamp:
    """CLOCK_REALTIME and CLOCK_MONOTONIC now, in microseconds."""
    return Timestamp(
        realtime=time.clock_gettime_ns(time.CLOCK_REALTIME) // 1000,
        monotonic=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
    )


def boot_timestamp() -> Timestamp:
    """The moment of boot: realtime = now − boottime; monotonic = monotonic − boottime, ≥ 0."""
    realtime = time.clock_gettime_ns(time.CLOCK_REALTIME) // 1000
    monotonic = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    boottime = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1000
    return Timestamp(realtime=realtime - boottime, monotonic=max(0, monotonic - boottime))


Clock = Callable[[], Timestamp]
