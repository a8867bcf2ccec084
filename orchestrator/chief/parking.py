"""Parked CreateTrial long-polls: who waits, and whom a change wakes.

A worker with nothing to run parks its CreateTrial at the chief until a trial
is ready, its long-poll times out, or the search stops. With a thousand
workers and a few hundred trials, most of the fleet is parked at any time, so
parking must cost no thread (the chief's gRPC server is asyncio; a parked call
is a future) and a change must not wake the whole fleet: an EndTrial that lets
the oracle make one trial wakes one parked call, not a thousand.

The broker decides how many to wake (:meth:`TrialBroker._wake_parked_locked`);
this module only keeps the waiters, one per worker id, oldest first, and wakes
them. A waiter is woken at most once; the call it belongs to then asks the
broker again and either gets its answer or parks anew.

Thread-safe: parking and waking happen under the lot's own small lock, never
the broker's, so the event loop never waits for a ledger commit to unpark.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol


class Waiter(Protocol):
    """Something a parked call waits on; :meth:`wake` may be called from any thread."""

    def wake(self) -> None: ...


class ThreadWaiter:
    """A waiter for a call served on a thread (the broker's synchronous API)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        """Block until woken or ``timeout_s`` passed; True when woken."""
        return self._event.wait(max(timeout_s, 0.0))


class AsyncWaiter:
    """A waiter for a call served on an event loop: a future, set thread-safely."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> None:
        # A closed loop raises RuntimeError: the call is gone with it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout_s: float) -> bool:
        """Until woken or ``timeout_s`` passed; True when woken. Call on the loop."""
        try:
            await asyncio.wait_for(asyncio.shield(self._future), max(timeout_s, 0.0))
        except TimeoutError:
            return False
        return True


class ParkingLot:
    """The parked calls, one per worker id, in the order they parked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: OrderedDict[str, Waiter] = OrderedDict()

    def park(self, worker_id: str, waiter: Waiter) -> None:
        """Park ``waiter`` for ``worker_id`` (replacing an earlier one, which is woken)."""
        with self._lock:
            earlier = self._parked.pop(worker_id, None)
            self._parked[worker_id] = waiter
        if earlier is not None and earlier is not waiter:
            earlier.wake()

    def unpark(self, worker_id: str, waiter: Waiter) -> None:
        """Forget ``waiter`` if it is still the one parked for ``worker_id``."""
        with self._lock:
            if self._parked.get(worker_id) is waiter:
                del self._parked[worker_id]

    def discard(self, worker_id: str) -> None:
        """Forget whatever is parked for ``worker_id``, without waking it."""
        with self._lock:
            self._parked.pop(worker_id, None)

    def wake_oldest(self, n: int) -> int:
        """Wake the ``n`` longest-parked calls; returns how many were woken."""
        if n <= 0:
            return 0
        with self._lock:
            woken = [self._parked.popitem(last=False)[1] for _ in range(min(n, len(self._parked)))]
        for waiter in woken:
            waiter.wake()
        return len(woken)

    def wake_workers(self, worker_ids: Iterable[str]) -> None:
        """Wake the calls parked by these workers (drained, superseded)."""
        with self._lock:
            woken = [w for w in (self._parked.pop(i, None) for i in worker_ids) if w is not None]
        for waiter in woken:
            waiter.wake()

    def wake_all(self) -> int:
        """Wake every parked call (the search stopped); returns how many."""
        with self._lock:
            woken = list(self._parked.values())
            self._parked.clear()
        for waiter in woken:
            waiter.wake()
        return len(woken)

    def __len__(self) -> int:
        with self._lock:
            return len(self._parked)


__all__ = ["AsyncWaiter", "ParkingLot", "ThreadWaiter", "Waiter"]
