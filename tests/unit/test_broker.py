"""The broker's state machine without a network: EndTrial idempotency, stale
tokens, the consecutive-failure limit, long-polls that do not spin the oracle,
and a slow oracle that must not block EndTrial or heartbeats."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.oracle_host import OracleHost
from orchestrator.chief.service import check_metrics
from orchestrator.errors import InvalidRequestError, StaleLeaseError
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus
from tests.helpers import float_space, ledger_rows, make_search


def _broker(make_broker: Callable[..., TrialBroker], max_trials: int = 5, **failure: Any) -> Any:
    search = make_search(
        {"type": "random", "max_trials": max_trials, "seed": 1},
        failure={"retries_per_trial": 1, **failure},
    )
    return make_broker(search, initial_space=float_space())


def test_end_trial_twice_records_once(
    make_broker: Callable[..., TrialBroker], tmp_path: Path
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    first = broker.end_trial(
        a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.7}
    )
    n = len(ledger_rows(tmp_path / "ledger.db"))
    second = broker.end_trial(
        a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.7}
    )
    assert first.recorded and not second.recorded
    assert first.final_status is second.final_status is TrialStatus.COMPLETED
    assert len(ledger_rows(tmp_path / "ledger.db")) == n
    completed = [r for r in ledger_rows(tmp_path / "ledger.db") if r[1] == "completed"]
    assert [(tid, att) for _, _, tid, att in completed] == [(a.trial_id, 1)]


def test_retried_end_of_a_requeued_attempt_is_idempotent_too(
    make_broker: Callable[..., TrialBroker], tmp_path: Path
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    broker.end_trial(
        a.trial_id, a.token, status=AttemptStatus.INVALID, metrics={}, error_message="x"
    )
    n = len(ledger_rows(tmp_path / "ledger.db"))
    again = broker.end_trial(a.trial_id, a.token, status=AttemptStatus.INVALID, metrics={})
    assert not again.recorded and again.final_status is TrialStatus.PENDING
    assert len(ledger_rows(tmp_path / "ledger.db")) == n


def test_trials_to_start_until_the_last_is_handed_out_and_again_after_a_requeue(
    make_broker: Callable[..., TrialBroker],
) -> None:
    # What the fleet asks before it starts a worker process or warms a spare.
    broker = _broker(make_broker, max_trials=2)
    assert broker.trials_to_start
    broker.create_trial("w0", wait_s=0)
    assert broker.trials_to_start
    last = broker.create_trial("w1", wait_s=0)
    assert not broker.trials_to_start  # max_trials exist, none waits in the queue
    assert broker.state is SearchState.RUNNING
    broker.worker_lost("w1", "killed")  # its trial is requeued: a worker must run it
    assert broker.trials_to_start
    again = broker.create_trial("w2", wait_s=0)
    assert again.trial_id == last.trial_id and not broker.trials_to_start
    broker.stop_dispatch(SearchState.CANCELLED, "cancelled", requeue_running=True)
    assert not broker.trials_to_start  # requeued by the cancel, but none will start


def test_stale_token_is_refused_and_ignored(
    make_broker: Callable[..., TrialBroker], fake_clock: Any, tmp_path: Path
) -> None:
    broker = _broker(make_broker, lease_timeout_s=5.0)
    a = broker.create_trial("w0", wait_s=0)
    fake_clock.advance(6.0)
    broker.expire_leases()
    b = broker.create_trial("w1", wait_s=0)
    assert b.trial_id == a.trial_id and b.attempt == 2
    n = len(ledger_rows(tmp_path / "ledger.db"))
    with pytest.raises(
        StaleLeaseError, match=r"not the current attempt's \(attempt 2 is held by w1\)"
    ):
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 9})
    with pytest.raises(StaleLeaseError, match="its result is ignored"):
        broker.report(a.trial_id, a.token, epoch=3, metrics={"score": 9})
    assert len(ledger_rows(tmp_path / "ledger.db")) == n
    assert broker.get_trial(a.trial_id).status is TrialStatus.RUNNING
    assert broker.get_trial(a.trial_id).score is None
    # The current attempt still ends normally, and then every token is stale.
    broker.end_trial(b.trial_id, b.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
    with pytest.raises(StaleLeaseError, match="already ended as COMPLETED"):
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 9})
    assert broker.get_trial(a.trial_id).score == 1


def test_unknown_trial_id_is_invalid(make_broker: Callable[..., TrialBroker]) -> None:
    broker = _broker(make_broker)
    with pytest.raises(InvalidRequestError, match="unknown trial id '42'"):
        broker.end_trial("42", "tok", status=AttemptStatus.COMPLETED, metrics={"score": 1})
    with pytest.raises(InvalidRequestError, match="unknown trial id"):
        broker.report("42", "tok", epoch=0, metrics={})


def test_completed_without_objective_fails_naming_the_metrics_and_is_not_retried(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker)
    a = broker.create_trial("w0", wait_s=0)
    metrics = {"acc": 1.0, "loss": 0.5}
    out = broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics=metrics)
    # Another attempt would report the same metrics: FAILED, not requeued.
    assert out.final_status is TrialStatus.FAILED
    assert broker.get_trial(a.trial_id).error_message == (
        "the objective 'score' is not among the metrics the model logged (acc, loss); set the "
        "search file's `objective:` to one of them, or have the model log it "
        "(compile(metrics=[...]))"
    )


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"score": float("nan")}, "expected a finite number"),
        ({"score": float("inf")}, "expected a finite number"),
        ({"": 1.0}, "metric names must be printable"),
        ({"a\x00b": 1.0}, "metric names must be printable"),
        ({"x" * 201: 1.0}, "metric names must be printable"),
        ({f"m{i}": 1.0 for i in range(257)}, "at most 256 entries"),
    ],
)
def test_check_metrics_rejects(metrics: dict[str, float], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        check_metrics(metrics)


def test_consecutive_failures_end_the_search_quoting_the_last_error(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(
        make_broker, max_trials=10, max_consecutive_failed_trials=3, retries_per_trial=0
    )
    for i in range(3):
        a = broker.create_trial("w0", wait_s=0)
        broker.end_trial(
            a.trial_id,
            a.token,
            status=AttemptStatus.INVALID,
            metrics={},
            error_message=f"ValueError: bad layer {i}",
            traceback_tail="Traceback ...",
        )
    assert broker.state is SearchState.FAILED
    assert "3 consecutive trials failed" in broker.message
    assert "ValueError: bad layer 2" in broker.message
    assert broker.create_trial("w0", wait_s=0).kind is AssignmentKind.STOP
    assert broker.wait_finished(0) is SearchState.FAILED


def test_success_resets_the_consecutive_failure_count(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(
        make_broker, max_trials=10, max_consecutive_failed_trials=2, retries_per_trial=0
    )
    for status in ("FAILED", "COMPLETED", "FAILED", "COMPLETED"):
        a = broker.create_trial("w0", wait_s=0)
        broker.end_trial(
            a.trial_id,
            a.token,
            status=AttemptStatus(status),
            metrics={"score": 1.0},
            error_message="e",
        )
    assert broker.state is SearchState.RUNNING


class _CountingHost(OracleHost):
    """An OracleHost that counts create_trial calls and can be made slow."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.creates = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def create_trial(self) -> Any:
        self.creates += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10.0)
        return super().create_trial()


def _counting_broker(tmp_path: Path, fake_clock: Any, oracle: dict[str, Any]) -> TrialBroker:
    from orchestrator.chief.ledger import Ledger

    search = make_search(oracle, failure={"retries_per_trial": 0})
    host = _CountingHost(search, initial_space=float_space())
    broker = TrialBroker(
        search=search,
        ledger=Ledger(tmp_path / "counting.db", clock=fake_clock),
        oracle_host=host,
        clock=fake_clock,
        long_poll_s=0.3,
    )
    broker.set_running("start")
    return broker


def test_idle_long_poll_asks_the_oracle_once_per_change(tmp_path: Path, fake_clock: Any) -> None:
    """Hyperband waiting on a round answers IDLE; waiting workers must long-poll
    on the condition, not re-ask the oracle in a loop."""
    broker = _counting_broker(
        tmp_path, fake_clock, {"type": "hyperband", "seed": 1, "max_epochs": 3, "factor": 3}
    )
    host = broker.oracle_host
    assert isinstance(host, _CountingHost)
    first_round = []
    while True:  # one worker per trial: a worker holding a trial gets it again
        a = broker.create_trial(f"w{len(first_round)}", wait_s=0)
        if a.kind is not AssignmentKind.TRIAL:
            break
        first_round.append(a)
    assert len(first_round) >= 2
    creates = host.creates
    started = time.monotonic()
    answer = broker.create_trial("idle", wait_s=1.0)
    assert answer.kind is AssignmentKind.WAIT
    assert time.monotonic() - started >= 0.9  # it long-polled
    assert host.creates == creates  # and asked the oracle nothing new
    # An end is a change: a waiting worker asks the oracle again and gets the continuation.
    for a in first_round:
        assert a.trial_id is not None
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
    nxt = broker.create_trial("idle", wait_s=1.0)
    assert nxt.kind is AssignmentKind.TRIAL
    assert nxt.values is not None and "tuner/trial_id" in nxt.values


def test_slow_oracle_does_not_block_end_trial_or_heartbeats(
    tmp_path: Path, fake_clock: Any
) -> None:
    broker = _counting_broker(tmp_path, fake_clock, {"type": "random", "max_trials": 5, "seed": 1})
    host = broker.oracle_host
    assert isinstance(host, _CountingHost)
    a = broker.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    host.gate = threading.Event()
    host.entered.clear()
    result: list[Any] = []
    slow = threading.Thread(target=lambda: result.append(broker.create_trial("w1", wait_s=5)))
    slow.start()
    try:
        assert host.entered.wait(5.0)  # w1 is inside the (blocked) oracle call
        t0 = time.monotonic()
        broker.report(a.trial_id, a.token, epoch=-1, metrics={})
        out = broker.end_trial(
            a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1}
        )
        assert out.recorded
        assert time.monotonic() - t0 < 1.0
    finally:
        host.gate.set()
        slow.join(10.0)
    assert result and result[0].kind is AssignmentKind.TRIAL
    # The end was queued during the oracle call; it reaches the oracle before
    # the oracle's next decision.
    host.gate = None
    broker.create_trial("w2", wait_s=0)
    assert host.oracle.trials[a.trial_id].status == "COMPLETED"


def test_oracle_exception_does_not_leak_keras_tuner_lock(
    tmp_path: Path, fake_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _counting_broker(tmp_path, fake_clock, {"type": "random", "max_trials": 5, "seed": 1})
    oracle = broker.oracle_host.oracle
    calls = {"n": 0}
    original = type(oracle).populate_space

    def flaky(self: Any, trial_id: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("oracle bug")
        return original(self, trial_id)

    monkeypatch.setattr(type(oracle), "populate_space", flaky)
    with pytest.raises(RuntimeError, match="oracle bug"):
        broker.create_trial("w0", wait_s=0)
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(broker.create_trial("w0", wait_s=0)))
    t.start()
    t.join(5.0)
    assert done and done[0].kind is AssignmentKind.TRIAL, "the oracle stayed locked"


def test_interrupt_with_finish_lets_running_trials_end_and_starts_none(
    make_broker: Callable[..., TrialBroker],
) -> None:
    """Ctrl-C with --on-interrupt finish: the running trial ends and is recorded,
    no new trial is handed out, and the search stops as INTERRUPTED."""
    broker = _broker(make_broker, max_trials=5)
    running = broker.create_trial("w0", wait_s=0)
    broker.stop_dispatch(SearchState.INTERRUPTED, "interrupted", requeue_running=False)

    assert broker.create_trial("w1", wait_s=0).kind is AssignmentKind.STOP
    assert broker.state is SearchState.RUNNING  # still finishing w0's trial
    broker.end_trial(
        running.trial_id, running.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.5}
    )
    assert broker.state is SearchState.INTERRUPTED
    assert broker.get_trial(running.trial_id).status is TrialStatus.COMPLETED
    assert [t.trial_id for t in broker.trials()] == [running.trial_id]


@pytest.mark.parametrize("direction", ["max", "min"])
def test_summary_best_and_ranking_agree_with_a_plain_sort(
    make_broker: Callable[..., TrialBroker], direction: str
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 12, "seed": 3},
        objective={"name": "score", "direction": direction},
    )
    broker = make_broker(search, initial_space=float_space())
    scores = [0.4, 0.9, 0.1, 0.9, 0.5, 0.3, 0.7, 0.2]  # a tie at 0.9
    ids = []
    for i, score in enumerate(scores):
        a = broker.create_trial(f"w{i}", wait_s=0)
        ids.append(a.trial_id)
        broker.end_trial(
            a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": score}
        )
    failed = broker.create_trial("wf", wait_s=0)
    broker.end_trial(failed.trial_id, failed.token, status=AttemptStatus.FAILED, metrics={})
    running = broker.create_trial("wr", wait_s=0)

    ranked = broker.best_trials(100)
    by_score = sorted(zip(scores, ids, strict=True), key=lambda p: p[0], reverse=direction == "max")
    # Best first, ties in creation order (a stable sort), then the unscored by id.
    want = [tid for _, tid in by_score] + sorted([failed.trial_id, running.trial_id])
    assert [t.trial_id for t in ranked] == want

    summary = broker.summary()
    assert summary.best is not None and summary.best.trial_id == want[0]
    assert summary.trials_by_status["COMPLETED"] == len(scores)
    assert summary.trials_by_status["FAILED"] == 1
    assert summary.trials_by_status["RUNNING"] == 1
