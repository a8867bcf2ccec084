"""What one caller may hold of the chief at a time: long-polls and uploads.

The chief serves RPCs on one event loop (a parked CreateTrial holds no thread;
see :mod:`orchestrator.chief.server`) and stores artifacts on one disk. A token
holder that parks ten thousand 30-s CreateTrials or streams a terabyte must
not starve the fleet's workers, whose Report and EndTrial have to be answered
promptly. The bounds (defaults in
:class:`ProtocolLimits`, documented in docs/architecture.md, "The trial
protocol"):

- **One parked CreateTrial per worker id.** A worker that opens a second
  long-poll supersedes its first, which is answered WAIT at once (the broker's
  per-worker generation counter).
- **Parked CreateTrials per peer** (``max_long_polls_per_peer``, 16). A peer is
  one connection (gRPC's ``context.peer()``, address and port); one more is
  refused with RESOURCE_EXHAUSTED. Channels in one process may share a
  connection, hence a bound above one worker's need.
- **Parked CreateTrials in all** (``max_long_polls``, 8,192: a parked call
  costs a few kilobytes, no thread). Past it a CreateTrial is still answered,
  but at once: it gets a trial if one is ready, else WAIT; it never parks. A
  fleet has one parked call per worker at most, and ``fleet.max_workers`` is
  1,024 by default.
- **Uploads**: ``max_artifact_bytes`` per artifact, ``max_trial_artifact_bytes``
  per trial (INVALID_ARGUMENT, nothing kept), ``max_uploads_per_peer``
  concurrent uploads per peer and ``max_uploads`` in all (RESOURCE_EXHAUSTED),
  and ``upload_bytes_per_s_per_peer``: a peer's stream is throttled to that rate
  (a token bucket with one second of burst), so one peer cannot fill the disk
  faster than an operator can react.
- **A disk reserve** (``min_free_disk_bytes``, 1 GiB): an upload that would
  leave less free space than that on the search directory's disk is refused
  (RESOURCE_EXHAUSTED, nothing kept), checked before the first byte and every
  64 MiB written, so the ledger always has room to commit the trials' results.
  The trial itself still ends and is recorded; only its files are not kept.
- **Epoch reports** (``max_progress_bytes_per_attempt``, 8 MiB of ledger per
  attempt, :class:`ReportBudget`): past it a Report is refused
  (RESOURCE_EXHAUSTED, nothing committed), so a leased worker cannot fill the
  disk with reports. A worker that asks for a trial while it holds one gets
  that attempt again (the broker's long-poll), so it cannot hold more.

Each counter costs O(1) under its own small lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import LimitExceededError

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class ProtocolLimits:
    """The per-peer and per-call bounds of the trial protocol."""

    max_long_polls: int = 8192
    max_long_polls_per_peer: int = 16
    max_artifact_bytes: int = 4 * GIB
    max_trial_artifact_bytes: int = 8 * GIB
    max_uploads: int = 16
    max_uploads_per_peer: int = 2
    upload_bytes_per_s_per_peer: float = 256.0 * MIB
    min_free_disk_bytes: int = 1 * GIB
    # The ledger bytes one attempt's epoch reports may take (about 20,000
    # reports of 10 metrics); past it a Report is refused, so one leased
    # worker cannot fill the chief's disk with reports.
    max_progress_bytes_per_attempt: int = 8 * MIB


@dataclass
class _Counter:
    total: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)


class PeerSlots:
    """Counts concurrent calls per peer and in all; refuses or reports past a bound.

    Thread-safe; O(1) per acquire and release."""

    def __init__(self, *, per_peer: int, total: int, what: str) -> None:
        self.per_peer = per_peer
        self.total = total
        self.what = what
        self._lock = threading.Lock()
        self._count = _Counter()

    @contextmanager
    def hold(self, peer: str, *, over_total: Callable[[], None] | None = None) -> Iterator[bool]:
        """Hold one slot of ``peer`` for the ``with`` block.

        Past the per-peer bound raises LimitExceededError. Past the overall
        bound: calls ``over_total`` if given (which may raise), and yields
        False (the caller serves the call without parking); else yields True.
        """
        with self._lock:
            mine = self._count.by_peer.get(peer, 0)
            if mine >= self.per_peer:
                raise LimitExceededError(
                    f"{self.what}: this connection ({peer}) already holds {mine}, the most "
                    f"allowed per connection is {self.per_peer}; wait for one to end, or "
                    "open a separate connection per worker"
                )
            parked = self._count.total < self.total
            if parked:
                self._count.total += 1
                self._count.by_peer[peer] = mine + 1
        if not parked:
            if over_total is not None:
                over_total()
            yield False
            return
        try:
            yield True
        finally:
            with self._lock:
                self._count.total -= 1
                left = self._count.by_peer[peer] - 1
                if left:
                    self._count.by_peer[peer] = left
                else:
                    del self._count.by_peer[peer]

    def held(self, peer: str | None = None) -> int:
        """Slots held by ``peer``, or in all."""
        with self._lock:
            return self._count.total if peer is None else self._count.by_peer.get(peer, 0)


class UploadThrottle:
    """A token bucket per peer: ``rate_bytes_per_s`` with one second of burst.

    :meth:`delay_s` charges ``size`` bytes to the peer and returns how long the
    caller should wait before taking more (0 when within the rate). The clock is
    injectable, so tests need no sleeps. Idle peers are forgotten after a minute.
    """

    def __init__(self, rate_bytes_per_s: float, clock: Clock | None = None) -> None:
        self.rate = float(rate_bytes_per_s)
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._debt: dict[str, tuple[float, float]] = {}  # peer -> (bytes owed, at)

    def delay_s(self, peer: str, size: int) -> float:
        now = self.clock.monotonic()
        with self._lock:
            owed, at = self._debt.get(peer, (0.0, now))
            owed = max(0.0, owed - (now - at) * self.rate) + size
            self._debt[peer] = (owed, now)
            if len(self._debt) > 1024:
                self._forget_idle_locked(now)
        return max(0.0, (owed - self.rate) / self.rate)

    def _forget_idle_locked(self, now: float) -> None:
        for peer, (owed, at) in list(self._debt.items()):
            if owed - (now - at) * self.rate <= 0 and now - at > 60.0:
                del self._debt[peer]


__all__ = ["ProtocolLimits", "PeerSlots", "UploadThrottle"]


class ReportBudget:
    """The ledger bytes each attempt's epoch reports have taken, against a cap
    (:attr:`ProtocolLimits.max_progress_bytes_per_attempt`), so that one leased
    worker cannot fill the chief's disk with reports.

    Not thread-safe: the broker calls it under its lock. O(1) per report; one
    entry per trial."""

    def __init__(self, cap: int = ProtocolLimits.max_progress_bytes_per_attempt) -> None:
        self.cap = cap
        self._used: dict[str, tuple[int, int]] = {}  # trial id -> (attempt, bytes)

    @staticmethod
    def size(metrics: Mapping[str, float]) -> int:
        """About what one epoch report adds to the ledger: its JSON payload and row."""
        return 96 + sum(len(name.encode("utf-8", "surrogatepass")) + 28 for name in metrics)

    def check(self, trial_id: str, attempt: int, metrics: Mapping[str, float]) -> int:
        """The attempt's bytes with this report's; LimitExceededError past the cap."""
        seen, used = self._used.get(trial_id, (attempt, 0))
        used = (used if seen == attempt else 0) + self.size(metrics)
        if used > self.cap:
            raise LimitExceededError(
                f"trial {trial_id} attempt {attempt}: its epoch reports would take {used} "
                f"bytes of the ledger, over the {self.cap}-byte cap per attempt; report fewer "
                "or shorter metrics per epoch (the attempt keeps its lease)"
            )
        return used

    def record(self, trial_id: str, attempt: int, used: int) -> None:
        """The report :meth:`check` passed was committed."""
        self._used[trial_id] = (attempt, used)
