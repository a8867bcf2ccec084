"""Property: replaying the ledger gives the live chief's state, field by field,
after any sequence of operations, with chief restarts at any point; no trial
is ever lost and no completed trial is handed out again.

In-process: the real broker, a real ledger file, a real Keras Tuner oracle and
a FakeClock. A "restart" is a new broker replaying the same ledger file, as
``Chief.resume`` builds it. Requests go through the service's own checks
(``parse_trial_hyperparameters``, ``check_metrics``), so a request they refuse
must change nothing.

The example budget is fixed for CI (``ci`` profile); ``KTC_HYPOTHESIS_PROFILE=long``
runs a longer search (tests/conftest.py registers both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.oracle_host import OracleHost
from orchestrator.chief.replay import replay
from orchestrator.chief.service import check_metrics, parse_trial_hyperparameters
from orchestrator.chief.trial_book import TrialBook
from orchestrator.clock import FakeClock
from orchestrator.errors import InvalidRequestError, StaleLeaseError
from orchestrator.protocol.answers import Assignment, AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus
from tests.helpers import make_search

LEASE_S = 10.0
WORKERS = ("w0", "w1", "w2")


def _space() -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Choice("layers", [1, 2])
    with hp.conditional_scope("layers", [2]):
        hp.Int("units_1", 8, 64, step=8)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    return hp


def _built_config(assignment: Assignment, extra: str | None) -> str:
    """The trial state a worker sends back: the trial's own hyperparameters, plus
    one the build registered (a conditional value the oracle never chose)."""
    import keras_tuner

    from orchestrator.protocol.kt_state import trial_from_state

    assert assignment.trial_state is not None
    hp = trial_from_state(assignment.trial_state).hyperparameters
    if extra:
        with hp.conditional_scope("layers", [1, 2]):
            hp.Int(extra, 1, 4)
    assert isinstance(hp, keras_tuner.HyperParameters)
    return json.dumps({"hyperparameters": hp.get_config()})


def book_state(book: TrialBook) -> dict[str, Any]:
    """Every field of the book that replay must reproduce."""
    return {
        "records": {tid: dataclasses.asdict(rec) for tid, rec in book.records.items()},
        "queue": list(book.queue),
        "start_order": list(book.start_order),
        "end_order": list(book.end_order),
        "consecutive_failures": book.consecutive_failures,
        "space": book.space_config,
        "state": book.state,
        "message": book.message,
    }


class ChiefMachine(RuleBasedStateMachine):
    """Drives a broker the way workers, the fleet, the CLI and crashes do."""

    held = Bundle("held")  # assignments a worker still holds (a token it may use)
    spent = Bundle("spent")  # assignments whose attempt ended (their tokens are stale)

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ktc-prop-"))
        self.clock = FakeClock()
        self.search = make_search(
            {"type": "random", "max_trials": 6, "seed": 3},
            failure={
                "retries_per_trial": 1,
                "max_consecutive_failed_trials": 4,
                "lease_timeout_s": LEASE_S,
            },
        )
        self.broker: TrialBroker | None = None
        self.completed: set[str] = set()
        self.created: set[str] = set()
        self.extra = 0

    # ----------------------------------------------------------------- setup

    @initialize()
    def start(self) -> None:
        ledger = Ledger(self.dir / "ledger.db", clock=self.clock)
        host = OracleHost(self.search, initial_space=_space())
        self.broker = TrialBroker(
            search=self.search, ledger=ledger, oracle_host=host, clock=self.clock, long_poll_s=0
        )
        self.broker.record_space(host.space_config())
        self.broker.set_running("search started")

    def teardown(self) -> None:
        if self.broker is not None:
            with contextlib.suppress(Exception):
                self.broker.oracle_host.close()
                self.broker.ledger.close()

    @property
    def b(self) -> TrialBroker:
        assert self.broker is not None
        return self.broker

    # ------------------------------------------------------------ operations

    @rule(target=held, worker=st.sampled_from(WORKERS))
    def create(self, worker: str) -> Any:
        answer = self.b.create_trial(worker, wait_s=0)
        if answer.kind is not AssignmentKind.TRIAL:
            return multiple()
        assert answer.trial_id not in self.completed, "a completed trial was handed out again"
        self.created.add(answer.trial_id or "")
        return (worker, answer)

    @rule(held=held, epoch=st.integers(0, 3), value=st.floats(0, 1))
    def report(self, held: tuple[str, Assignment], epoch: int, value: float) -> None:
        worker, a = held
        metrics = {"loss": value}
        check_metrics(metrics)
        with contextlib.suppress(StaleLeaseError):
            self.b.report(a.trial_id or "", a.token, epoch=epoch, metrics=metrics, worker_id=worker)

    @rule(
        target=spent,
        held=consumes(held),
        how=st.sampled_from(["complete", "complete+hp", "fail", "raise", "stop"]),
        score=st.floats(0, 1),
    )
    def end(self, held: tuple[str, Assignment], how: str, score: float) -> Any:
        _, a = held
        status = {
            "complete": AttemptStatus.COMPLETED,
            "complete+hp": AttemptStatus.COMPLETED,
            "fail": AttemptStatus.FAILED,
            "raise": AttemptStatus.INVALID,
            "stop": AttemptStatus.STOPPED,
        }[how]
        extra = None
        if how == "complete+hp":
            self.extra += 1
            extra = f"built_{self.extra}"
        hp = parse_trial_hyperparameters(_built_config(a, extra))
        metrics = {"score": score} if status is AttemptStatus.COMPLETED else {}
        try:
            outcome = self.b.end_trial(
                a.trial_id or "",
                a.token,
                status=status,
                metrics=metrics,
                error_message=f"{how} in {a.trial_id}",
                traceback_tail="Traceback ...\nValueError: boom" if how == "raise" else "",
                hyperparameters_config=hp,
            )
        except StaleLeaseError:
            return held
        if outcome.final_status is TrialStatus.COMPLETED:
            self.completed.add(a.trial_id or "")
        return (held, status, metrics, hp)

    @rule(spent=spent)
    def duplicate_end(self, spent: tuple[Any, AttemptStatus, dict[str, float], Any]) -> None:
        """The same EndTrial again (a retried RPC): never recorded twice."""
        if len(spent) == 2:  # a (worker, assignment) whose lease had gone: stale
            return
        (_, a), status, metrics, hp = spent
        before = self.b.ledger.count()
        try:
            outcome = self.b.end_trial(
                a.trial_id or "",
                a.token,
                status=status,
                metrics=metrics,
                hyperparameters_config=hp,
            )
        except StaleLeaseError:
            pass  # a restart without its leases revoked the attempt before it ended
        else:
            assert not outcome.recorded
        assert self.b.ledger.count() == before

    @rule(held=held)
    def stale_end(self, held: tuple[str, Assignment]) -> None:
        """An EndTrial with a token that is not the attempt's: refused, nothing changes."""
        _, a = held
        before = book_state(self.b.book)
        with pytest.raises(StaleLeaseError, match="result is ignored"):
            self.b.end_trial(
                a.trial_id or "",
                a.token + "x",
                status=AttemptStatus.COMPLETED,
                metrics={"score": 1.0},
            )
        assert book_state(self.b.book) == before

    @rule(
        held=held,
        bad=st.sampled_from(
            [
                '{"hyperparameters": "x"}',
                '{"hyperparameters": {"space": [{"class_name": "Nope", "config": {}}], "values": {}}}',
                "[" * 3000 + "]" * 3000,
                "not json",
                '{"no_hyperparameters": 1}',
            ]
        ),
    )
    def invalid_end(self, held: tuple[str, Assignment], bad: str) -> None:
        """A malformed EndTrial is refused before anything is committed."""
        before, count = book_state(self.b.book), self.b.ledger.count()
        with pytest.raises(InvalidRequestError, match="trial_state_json"):
            parse_trial_hyperparameters(bad)
        assert (book_state(self.b.book), self.b.ledger.count()) == (before, count)

    @rule()
    def lease_expiry(self) -> None:
        self.clock.advance(LEASE_S + 1)
        self.b.expire_leases()

    @rule(worker=st.sampled_from(WORKERS))
    def worker_lost(self, worker: str) -> None:
        self.b.worker_lost(worker, "the actor died")

    @rule(worker=st.sampled_from(WORKERS))
    def preempt(self, worker: str) -> None:
        self.b.preempt_worker(worker, f"worker {worker} preempted (scale --now)")
        self.b.forget_worker(worker)  # it may come back later

    @rule(name=st.sampled_from(["dropout", "batch", "width"]))
    def space_growth(self, name: str) -> None:
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        hp.Int(name, 1, 8)
        self.b.update_space(parse_space(hp.get_config()))

    @rule(now=st.booleans())
    def cancel(self, now: bool) -> None:
        self.b.stop_dispatch(SearchState.CANCELLED, "cancelled", requeue_running=now)

    @precondition(lambda self: self.broker is not None)
    @rule(keep_leases=st.booleans(), apply_ends=st.booleans())
    def restart(self, keep_leases: bool, apply_ends: bool) -> None:
        """The chief dies (ends applied to its oracle or not) and resumes from the ledger."""
        old = self.b
        if apply_ends:
            old.apply_pending_ends()
        old.oracle_host.close()
        old.ledger.close()
        ledger = Ledger(self.dir / "ledger.db", clock=self.clock)
        replayed = replay(ledger, strict=True)
        if replayed.state is SearchState.COMPLETED:
            self.broker = TrialBroker(
                search=self.search,
                ledger=ledger,
                oracle_host=OracleHost(self.search),
                clock=self.clock,
                long_poll_s=0,
            )
            self.broker.restore(replayed, keep_leases=True)
            return
        self.broker = TrialBroker(
            search=self.search,
            ledger=ledger,
            oracle_host=OracleHost(self.search),
            clock=self.clock,
            long_poll_s=0,
        )
        self.broker.restore(replayed, keep_leases=keep_leases)
        self.broker.set_running("resumed")

    # ------------------------------------------------------------- invariants

    @invariant()
    def replay_equals_live(self) -> None:
        if self.broker is None:
            return
        replayed = replay(self.b.ledger, strict=True)
        assert book_state(replayed.book) == book_state(self.b.book)

    @invariant()
    def no_trial_lost(self) -> None:
        if self.broker is None:
            return
        book = self.b.book
        assert self.created <= set(book.records), "a created trial is gone"
        queued = list(book.queue)
        assert len(queued) == len(set(queued)), f"a trial is queued twice: {queued}"
        leased = {lease.trial_id for lease in self.b.leases.all()}
        for tid, rec in book.records.items():
            if rec.status is TrialStatus.PENDING:
                assert tid in queued, f"trial {tid} is PENDING but not queued: lost"
            else:
                assert tid not in queued
            if rec.status is TrialStatus.RUNNING:
                assert tid in leased, f"trial {tid} is RUNNING with no lease: lost"
            else:
                assert tid not in leased
        for tid in self.completed:
            assert book.records[tid].status is TrialStatus.COMPLETED


def parse_space(config: dict[str, Any]) -> dict[str, Any]:
    from orchestrator.protocol.kt_state import canonical_hyperparameters

    return canonical_hyperparameters(config, where="hyperparameters_json")


TestChiefMachine = ChiefMachine.TestCase


def test_replay_refuses_nothing_the_live_chief_wrote(tmp_path: Path) -> None:
    """A short fixed run, for a readable failure before the random ones."""
    machine = ChiefMachine()
    try:
        machine.start()
        held = [machine.create(w) for w in WORKERS]
        machine.report(held[0], 0, 0.5)
        machine.end(held[0], "complete+hp", 0.9)
        machine.end(held[1], "raise", 0.0)
        machine.restart(keep_leases=False, apply_ends=False)
        machine.replay_equals_live()
        machine.no_trial_lost()
    finally:
        machine.teardown()
