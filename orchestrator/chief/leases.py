"""Leases: which worker holds which trial attempt, until when.

A lease is (trial, worker, attempt, token, deadline). Reports renew it; a lease
whose deadline passes means the worker died or lost its network, and the
broker puts the trial back in the queue (rq's heartbeat-with-TTL model). Time
comes from an injectable :class:`~orchestrator.clock.Clock`, so tests expire
leases without sleeping.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, replace

from orchestrator.clock import Clock


@dataclass(frozen=True)
class Lease:
    """One attempt of one trial, held by one worker."""

    trial_id: str
    worker_id: str
    attempt: int
    token: str
    deadline_s: float  # on the clock's monotonic scale


class LeaseTable:
    """The live leases. Thread-safe; :meth:`held_by` is O(the worker's leases),
    :meth:`expired`, :meth:`all` and :meth:`seconds_to_next_expiry` O(leases),
    the rest O(1)."""

    def __init__(self, clock: Clock, timeout_s: float) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self._by_trial: dict[str, Lease] = {}
        self._by_worker: dict[str, dict[str, None]] = {}  # worker -> its trial ids, in order
        self._lock = threading.Lock()

    def _forget_locked(self, trial_id: str) -> Lease | None:
        lease = self._by_trial.pop(trial_id, None)
        if lease is not None:
            held = self._by_worker[lease.worker_id]
            del held[trial_id]
            if not held:
                del self._by_worker[lease.worker_id]
        return lease

    def grant(self, trial_id: str, worker_id: str, attempt: int, token: str | None = None) -> Lease:
        """Lease ``trial_id`` to ``worker_id`` (replacing any previous lease)."""
        lease = Lease(
            trial_id=trial_id,
            worker_id=worker_id,
            attempt=attempt,
            token=token or secrets.token_hex(16),
            deadline_s=self._clock.monotonic() + self.timeout_s,
        )
        with self._lock:
            self._forget_locked(trial_id)
            self._by_trial[trial_id] = lease
            self._by_worker.setdefault(worker_id, {})[trial_id] = None
        return lease

    def get(self, trial_id: str) -> Lease | None:
        with self._lock:
            return self._by_trial.get(trial_id)

    def renew(self, trial_id: str, token: str) -> Lease | None:
        """Push the deadline out; None when ``token`` is not the current lease's."""
        with self._lock:
            lease = self._by_trial.get(trial_id)
            if lease is None or lease.token != token:
                return None
            lease = replace(lease, deadline_s=self._clock.monotonic() + self.timeout_s)
            self._by_trial[trial_id] = lease
            return lease

    def release(self, trial_id: str) -> Lease | None:
        """Drop the lease (the attempt ended); returns it."""
        with self._lock:
            return self._forget_locked(trial_id)

    def expired(self) -> list[Lease]:
        """Leases whose deadline has passed (they stay in the table)."""
        now = self._clock.monotonic()
        with self._lock:
            return [lease for lease in self._by_trial.values() if lease.deadline_s <= now]

    def held_by(self, worker_id: str) -> list[Lease]:
        """The worker's leases, oldest first."""
        with self._lock:
            return [self._by_trial[t] for t in self._by_worker.get(worker_id, ())]

    def all(self) -> list[Lease]:
        with self._lock:
            return list(self._by_trial.values())

    def seconds_to_next_expiry(self) -> float | None:
        """How long until the earliest deadline (0 if one has passed); None if no lease."""
        with self._lock:
            if not self._by_trial:
                return None
            earliest = min(lease.deadline_s for lease in self._by_trial.values())
        return max(0.0, earliest - self._clock.monotonic())
