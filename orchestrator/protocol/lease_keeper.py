"""LeaseKeeper: a running trial's lease, renewed from a background thread,
and its epoch reports.

Kept apart from :mod:`orchestrator.protocol.client` (the RPCs themselves): this
is the one piece of the worker's protocol that runs on its own thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping

from orchestrator.errors import KtClusterError, StaleLeaseError
from orchestrator.protocol.client import LeasedTrial, ReportAction, TrialClient

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews a lease from a background thread while a trial runs, so an epoch
    longer than the lease timeout is not mistaken for a dead worker, and sends
    the trial's epoch reports (:meth:`report`).

    ``stop_requested`` is set when the chief answers STOP; ``lost`` when the
    lease was revoked (the result would be refused).

    When the chief says its answers to reports do not depend on the epoch
    (``LeasedTrial.reports_async``: no trial scheduler), a report is queued and
    sent by this thread, in order, and training goes on at once: a STOP then
    acts at the next epoch, as a heartbeat's does. Leaving the ``with`` block
    sends what is queued before the trial ends. With a scheduler, each report
    waits for its answer, so that its stop acts at the epoch it judged.
    """

    def __init__(
        self, client: TrialClient, trial: LeasedTrial, interval_s: float | None = None
    ) -> None:
        self.client = client
        self.trial = trial
        self.interval_s = interval_s or max(trial.lease_timeout_s / 4.0, 0.05)
        self.stop_requested = threading.Event()
        self.lost = threading.Event()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._queued: deque[tuple[int, dict[str, float]]] = deque()
        self._failure: KtClusterError | None = None  # a queued report's, raised by the next
        self._thread = threading.Thread(
            target=self._run, name=f"ktc-lease-{trial.trial_id}", daemon=True
        )

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._wake.set()
        # Each queued report is one RPC; the thread sends them before it ends.
        self._thread.join(timeout=self.client.rpc_timeout_s * (1 + len(self._queued)))

    def report(self, epoch: int, metrics: Mapping[str, float]) -> ReportAction:
        """Report an epoch; what to do now (STOP_EARLY only from a scheduler).

        Raises StaleLeaseError when the lease was revoked, and what an earlier
        queued report met, as a synchronous report would have raised it.
        """
        if not self.trial.reports_async:
            return self.client.report(self.trial, epoch, metrics)
        if self.lost.is_set():
            raise StaleLeaseError(f"trial {self.trial.trial_id}: the chief revoked this lease")
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        self._queued.append((epoch, dict(metrics)))
        self._wake.set()
        return ReportAction.STOP if self.stop_requested.is_set() else ReportAction.CONTINUE

    def _run(self) -> None:
        while True:
            woken = bool(self._queued)
            if not woken:
                if self._done.is_set():
                    return
                woken = self._wake.wait(self.interval_s)
                self._wake.clear()
            try:
                if self._queued:
                    while self._queued:
                        epoch, metrics = self._queued[0]
                        self._answer(self.client.report(self.trial, epoch, metrics))
                        self._queued.popleft()
                elif not woken:
                    self._answer(self.client.heartbeat(self.trial))
            except StaleLeaseError:
                self._queued.clear()
                self.lost.set()
                self.stop_requested.set()
                return
            except KtClusterError as exc:
                if self._queued:  # a report's: the trial meets it at its next report
                    self._queued.clear()
                    self._failure = exc
                log.warning("report for trial %s failed: %s", self.trial.trial_id, exc)
            except ValueError as exc:
                # grpc raises ValueError once the client's channel is closed: the
                # worker is shutting down, so there is nothing left to renew.
                log.debug("heartbeat for trial %s stopped: %s", self.trial.trial_id, exc)
                return

    def _answer(self, action: ReportAction) -> None:
        if action is not ReportAction.CONTINUE:
            self.stop_requested.set()
