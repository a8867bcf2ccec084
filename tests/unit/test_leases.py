"""Leases with an injected clock: expiry requeues the same trial as attempt + 1,
the retry limit then fails it with the reason recorded, heartbeats renew, and a
lost worker's trials come back at once. No sleeps: the FakeClock moves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.leases import LeaseTable
from orchestrator.clock import FakeClock
from orchestrator.errors import StaleLeaseError
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, TrialStatus
from tests.helpers import float_space, ledger_rows, make_search

LEASE_S = 10.0


def _broker(make_broker: Callable[..., TrialBroker], retries: int = 1, **failure: Any) -> Any:
    search = make_search(
        {"type": "random", "max_trials": 5, "seed": 1},
        failure={"retries_per_trial": retries, "lease_timeout_s": LEASE_S, **failure},
    )
    return make_broker(search, initial_space=float_space())


def test_lease_table_expiry_and_renewal() -> None:
    clock = FakeClock()
    table = LeaseTable(clock, timeout_s=5.0)
    lease = table.grant("0", "w0", 1)
    assert table.seconds_to_next_expiry() == 5.0
    clock.advance(4.0)
    assert table.expired() == []
    assert table.renew("0", "not-the-token") is None
    renewed = table.renew("0", lease.token)
    assert renewed is not None and renewed.deadline_s == clock.monotonic() + 5.0
    clock.advance(4.9)
    assert table.expired() == []
    clock.advance(0.1)
    assert [lease.trial_id for lease in table.expired()] == ["0"]
    assert table.seconds_to_next_expiry() == 0.0
    assert table.release("0") is not None and table.all() == []
    assert table.seconds_to_next_expiry() is None


def test_expired_lease_requeues_same_hyperparameters_as_next_attempt(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock, tmp_path: Path
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    fake_clock.advance(LEASE_S - 0.5)
    assert broker.expire_leases() == []
    fake_clock.advance(1.0)
    assert broker.expire_leases() == [a.trial_id]
    view = broker.get_trial(a.trial_id)
    assert view.status is TrialStatus.PENDING
    assert "lease expired: worker w0 sent nothing for 10 s" in (view.error_message or "")

    b = broker.create_trial("w1", wait_s=0)
    assert (b.kind, b.trial_id, b.attempt, b.values) == (
        AssignmentKind.TRIAL,
        a.trial_id,
        2,
        a.values,
    )
    assert b.token != a.token
    # The first attempt's late result is refused and changes nothing.
    n = len(ledger_rows(tmp_path / "ledger.db"))
    with pytest.raises(StaleLeaseError, match="not the current attempt's"):
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
    assert len(ledger_rows(tmp_path / "ledger.db")) == n
    kinds = [
        (k, att) for _, k, tid, att in ledger_rows(tmp_path / "ledger.db") if tid == a.trial_id
    ]
    assert kinds == [("created", None), ("assigned", 1), ("requeued", 1), ("assigned", 2)]


def test_retry_limit_then_failed_with_reason(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock, tmp_path: Path
) -> None:
    broker = _broker(make_broker, retries=1)
    a = broker.create_trial("w0", wait_s=0)
    fake_clock.advance(LEASE_S + 1)
    broker.expire_leases()
    b = broker.create_trial("w0", wait_s=0)
    assert (b.trial_id, b.attempt) == (a.trial_id, 2)
    fake_clock.advance(LEASE_S + 1)
    broker.expire_leases()
    view = broker.get_trial(a.trial_id)
    assert view.status is TrialStatus.FAILED
    assert view.error_message is not None
    assert "lease expired" in view.error_message
    assert "retry limit 1 reached" in view.error_message
    failed = [e for e in broker.ledger.events() if e.kind.value == "failed"]
    assert len(failed) == 1 and failed[0].trial_id == a.trial_id
    assert "retry limit 1 reached" in failed[0].payload["error_message"]
    # The failed trial is never handed out again: the next one is new.
    c = broker.create_trial("w0", wait_s=0)
    assert c.trial_id != a.trial_id and c.attempt == 1


def test_heartbeats_renew_the_lease(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock, tmp_path: Path
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    n = len(ledger_rows(tmp_path / "ledger.db"))
    for _ in range(5):  # 5 x 8 s = 40 s, four lease timeouts, kept alive by heartbeats
        fake_clock.advance(LEASE_S * 0.8)
        decision = broker.report(a.trial_id, a.token, epoch=-1, metrics={})
        assert not decision.stop and decision.lease_expires_in_s == LEASE_S
        assert broker.expire_leases() == []
    # A heartbeat (epoch -1) writes nothing to the ledger.
    assert len(ledger_rows(tmp_path / "ledger.db")) == n
    assert broker.get_trial(a.trial_id).status is TrialStatus.RUNNING
    fake_clock.advance(LEASE_S)
    assert broker.expire_leases() == [a.trial_id]


def test_worker_lost_requeues_at_once(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    other = broker.create_trial("w1", wait_s=0)
    assert broker.worker_lost("w0", "actor died") == [a.trial_id]
    view = broker.get_trial(a.trial_id)
    assert view.status is TrialStatus.PENDING
    assert view.error_message == "worker w0 died: actor died"
    assert broker.get_trial(other.trial_id).status is TrialStatus.RUNNING
    b = broker.create_trial("w2", wait_s=0)
    assert (b.trial_id, b.attempt, b.values) == (a.trial_id, 2, a.values)
    with pytest.raises(StaleLeaseError, match="not the current attempt's"):
        broker.report(a.trial_id, a.token, epoch=0, metrics={"score": 1.0})


def test_lost_lease_does_not_count_when_retries_zero_fails_at_once(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock
) -> None:
    broker = _broker(make_broker, retries=0)
    a = broker.create_trial("w0", wait_s=0)
    fake_clock.advance(LEASE_S + 1)
    broker.expire_leases()
    assert broker.get_trial(a.trial_id).status is TrialStatus.FAILED


def test_expired_leases_end_a_search_whose_oracle_is_exhausted(
    make_broker: Callable[..., TrialBroker], fake_clock: FakeClock
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 1, "seed": 1},
        failure={"retries_per_trial": 0, "lease_timeout_s": LEASE_S},
    )
    broker = make_broker(search, initial_space=float_space())
    broker.create_trial("w0", wait_s=0)
    assert broker.create_trial("w1", wait_s=0).kind is AssignmentKind.WAIT
    fake_clock.advance(LEASE_S + 1)
    broker.expire_leases()
    assert broker.wait_finished(2.0) is not None
    assert broker.create_trial("w1", wait_s=0).kind is AssignmentKind.STOP
