"""Epoch reports without waiting for the answer, at a real chief over gRPC.

With no trial scheduler, nothing the chief answers to a Report depends on the
epoch it judges: the chief says so in the lease (``reports_async``), and the
worker's LeaseKeeper sends each report from its own thread, in order, while
training goes on (issue 15: the per-epoch round trip was 4 to 10 % of a digits
CNN trial). A STOP, a revoked lease or a refused report then acts at the next
epoch (a STOP always revokes the lease: the revoked-lease test covers both); leaving the keeper sends what is queued before the trial ends. With a
scheduler, every report waits for its answer, so that a stop acts at the epoch
it judged (tests/integration/test_scheduler_grpc.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.errors import InvalidRequestError, StaleLeaseError
from orchestrator.protocol.client import ReportAction, TrialClient
from orchestrator.protocol.lease_keeper import LeaseKeeper
from tests.helpers import float_space, ledger_rows, make_search, wait_until

StartChief = Callable[..., tuple[Chief, Any]]


@pytest.fixture
def chief(start_chief: StartChief) -> tuple[Chief, Any]:
    """A chief with no trial scheduler: its leases say reports may go without waiting."""
    return start_chief(
        make_search({"type": "random", "max_trials": 4, "seed": 1}),
        initial_space=float_space(),
        long_poll_s=0,
    )


def _lease(client: TrialClient) -> Any:
    trial = client.create_trial(wait_s=0).trial
    assert trial is not None
    return trial


def _progress(search_dir: Path, trial_id: str) -> list[int]:
    """The epochs of a trial's progress events, in ledger order."""
    with sqlite3.connect(f"file:{search_dir / 'ledger.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT payload FROM events WHERE kind = 'progress' AND trial_id = ? ORDER BY seq",
            (trial_id,),
        ).fetchall()
    return [int(json.loads(payload)["epoch"]) for (payload,) in rows]


def test_without_a_scheduler_reports_go_in_order_and_all_land_before_the_end(
    chief: tuple[Chief, Any], search_dir: Path
) -> None:
    _, ep = chief
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = _lease(client)
        assert trial.reports_async
        # A slow chief: each Report takes 0.2 s. Training does not wait for it.
        sent: list[int] = []
        report = client.report

        def slow_report(leased: Any, epoch: int, metrics: Any) -> ReportAction:
            threading.Event().wait(0.2)
            sent.append(epoch)
            return report(leased, epoch, metrics)

        client.report = slow_report  # type: ignore[method-assign]
        with LeaseKeeper(client, trial) as keeper:
            for epoch in range(5):
                assert keeper.report(epoch, {"score": 0.1 * epoch}) is ReportAction.CONTINUE
            assert len(sent) < 5  # the loop did not wait for five round trips
        # Leaving the keeper sent every queued report, in order, before the end.
        assert sent == [0, 1, 2, 3, 4]
        assert client.end_attempt(trial, "COMPLETED", metrics={"score": 0.4}, best_step=4)
    assert _progress(search_dir, trial.trial_id) == [0, 1, 2, 3, 4]
    rows = [(kind, tid) for _, kind, tid, _ in ledger_rows(search_dir / "ledger.db")]
    assert rows.index(("completed", trial.trial_id)) > max(
        i for i, row in enumerate(rows) if row == ("progress", trial.trial_id)
    )


def test_a_revoked_lease_acts_at_the_next_report(
    chief: tuple[Chief, Any], search_dir: Path
) -> None:
    host, ep = chief
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = _lease(client)
        with LeaseKeeper(client, trial, interval_s=30) as keeper:
            assert keeper.report(0, {"score": 0.1}) is ReportAction.CONTINUE
            wait_until(lambda: _progress(search_dir, trial.trial_id) == [0], 10, what="epoch 0")
            # scale --now: the chief takes the trial back; its lease is revoked.
            host.broker.preempt_worker("w0", "scaled down")
            keeper.report(1, {"score": 0.2})  # sent in the background: refused there
            wait_until(keeper.lost.is_set, 10, what="the keeper to learn the lease is gone")
            assert keeper.stop_requested.is_set()
            with pytest.raises(StaleLeaseError):
                keeper.report(2, {"score": 0.3})
    assert _progress(search_dir, trial.trial_id) == [0]


def test_a_refused_report_is_raised_at_the_next_one(
    chief: tuple[Chief, Any], search_dir: Path
) -> None:
    _, ep = chief
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = _lease(client)
        with LeaseKeeper(client, trial, interval_s=30) as keeper:
            keeper.report(2_000_000_000, {"score": 0.1})  # an epoch the chief refuses
            wait_until(lambda: keeper._failure is not None, 10, what="the refusal")
            with pytest.raises(InvalidRequestError, match="epoch"):
                keeper.report(1, {"score": 0.2})
            # Met once: the trial goes on, and the next report is sent as usual.
            assert keeper.report(2, {"score": 0.3}) is ReportAction.CONTINUE
    assert _progress(search_dir, trial.trial_id) == [2]


def test_with_a_scheduler_each_report_waits_for_its_answer(
    start_chief: StartChief, search_dir: Path
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 2, "seed": 1},
        epochs=9,
        scheduler={"type": "asha", "grace_epochs": 1, "reduction_factor": 3},
    )
    _, ep = start_chief(search, initial_space=float_space(), long_poll_s=0)
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = _lease(client)
        assert not trial.reports_async
        with LeaseKeeper(client, trial, interval_s=30) as keeper:
            keeper.report(0, {"score": 0.5})
            # Answered before report() returned: the event is in the ledger already.
            assert _progress(search_dir, trial.trial_id) == [0]
