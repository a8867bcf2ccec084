"""A late EndTrial is refused: worker A takes a trial and goes silent past its
lease; the chief requeues it and hands it to worker B as attempt 2; A's late
Report and EndTrial fail with StaleLeaseError (gRPC FAILED_PRECONDITION), B's
EndTrial is recorded, and the ledger holds exactly one COMPLETED for the trial.

Real gRPC: a started Chief on a free port and independent TrialClient
channels per worker (no mocks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.events import EventKind
from orchestrator.errors import StaleLeaseError
from orchestrator.protocol.client import AssignmentKind, TrialClient
from tests.e2e.faults.conftest import assert_no_duplicate_or_lost, ledger_events
from tests.helpers import float_space, make_search, wait_until

pytestmark = pytest.mark.slow

LEASE_S = 1.0


@pytest.mark.parametrize("late", ["before_b_ends", "after_b_ends"])
def test_late_end_trial_is_refused(
    start_chief: Callable[..., Any], search_dir: Path, late: str
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 1, "seed": 3},
        failure={"lease_timeout_s": LEASE_S, "retries_per_trial": 3},
    )
    chief, endpoint = start_chief(search, initial_space=float_space(), long_poll_s=0.2)
    a = TrialClient(endpoint.address, endpoint.token, worker_id="worker-a")
    b = TrialClient(endpoint.address, endpoint.token, worker_id="worker-b")
    try:
        got_a = a.create_trial(wait_s=2.0)
        assert got_a.kind is AssignmentKind.TRIAL and got_a.trial is not None
        trial_a = got_a.trial
        assert trial_a.attempt == 1
        a.report(trial_a, 0, {"score": 0.1})

        # A goes silent: the lease reaper requeues the trial.
        def requeued() -> bool:
            return any(
                e.kind is EventKind.REQUEUED and e.trial_id == trial_a.trial_id
                for e in ledger_events(search_dir)
            )

        wait_until(requeued, LEASE_S * 10, interval_s=0.05, what="the lease to expire")
        got_b = b.create_trial(wait_s=2.0)
        assert got_b.kind is AssignmentKind.TRIAL and got_b.trial is not None
        trial_b = got_b.trial
        assert (trial_b.trial_id, trial_b.attempt) == (trial_a.trial_id, 2)
        assert trial_b.token != trial_a.token
        assert trial_b.values == trial_a.values

        with pytest.raises(StaleLeaseError, match=r"result is ignored"):
            a.report(trial_a, 1, {"score": 0.2})
        if late == "after_b_ends":
            assert b.end_trial(trial_b, "COMPLETED", metrics={"score": 0.5}) is True
            with pytest.raises(StaleLeaseError, match=r"already ended as COMPLETED|ignored"):
                a.end_trial(trial_a, "COMPLETED", metrics={"score": 0.9})
        else:
            with pytest.raises(
                StaleLeaseError,
                match=r"not the current attempt.s \(attempt 2 is held by worker-b\); its result is ignored",
            ):
                a.end_trial(trial_a, "COMPLETED", metrics={"score": 0.9})
            assert b.end_trial(trial_b, "COMPLETED", metrics={"score": 0.5}) is True
        # B's retry of the same call is idempotent, not a second completion.
        assert b.end_trial(trial_b, "COMPLETED", metrics={"score": 0.5}) is False
        # max_trials is 1: the next ask ends the search.
        wait_until(
            lambda: b.create_trial(wait_s=0.5).kind is AssignmentKind.STOP,
            15.0,
            what="STOP (the search completed)",
        )
        assert chief.wait(5.0) is not None
        summary = b.get_trial(trial_a.trial_id)
        assert summary.score == pytest.approx(0.5)
    finally:
        a.close()
        b.close()

    events = assert_no_duplicate_or_lost(search_dir, expected_trials=1)
    done = [e for e in events if e.kind is EventKind.COMPLETED]
    assert [(e.trial_id, e.attempt, e.worker_id) for e in done] == [
        (trial_a.trial_id, 2, "worker-b")
    ]
    assert done[0].payload["score"] == pytest.approx(0.5)
    requeue = next(e for e in events if e.kind is EventKind.REQUEUED)
    assert "lease expired" in requeue.payload["reason"] and "worker-a" in requeue.payload["reason"]
