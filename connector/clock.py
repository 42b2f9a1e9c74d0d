"""The one place the service reads time or waits: a `Clock`, passed in (DESIGN.md: I/O at the edges).

    clock = SYSTEM_CLOCK                      # the real one; tests pass tests.support.FakeClock
    deadline = clock.monotonic() + 5
    clock.wait(stop, 0.25)                    # True when `stop` was set, False on timeout

The watcher, the inbox's readiness rule, health and status read time only through a Clock, so
their tests can run on a fake one whose waits move time on at once instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    """Monotonic time for intervals, wall time for timestamps, and the waits of the service."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps a person reads, file ages)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time now, in UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`, unconditionally."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds passed; True when it was set."""
        ...

    def result(self, future: Future, timeout: float) -> Any:
        """`future.result()`, waiting at most `timeout` seconds (else concurrent.futures.TimeoutError)."""
        ...


class SystemClock:
    """The real clock: time.monotonic, time.time and real waits."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)

    def result(self, future: Future, timeout: float) -> Any:
        return future.result(timeout=timeout)


SYSTEM_CLOCK: Clock = SystemClock()
