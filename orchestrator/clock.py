"""Injectable time. Leases use the monotonic clock; the ledger stamps wall time.

Tests pass a :class:`FakeClock` so lease expiry is exercised without sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the chief reads time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (lease deadlines)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (timestamps in the ledger)."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now_s

    def wall(self) -> float:
        with self._lock:
            return 1_700_000_000.0 + self._now_s

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now_s += seconds
