"""The ledger's events and the replay round-trip, for every oracle type.

No Ray, no network: a TrialBroker over a real SQLite ledger in tmp_path, a real
OracleHost and a FakeClock. The reference for "restored correctly" is an
uninterrupted run of the same operations: a search that is cut, replayed and
restored must hand out exactly what the uninterrupted one does.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.events import EventKind
from orchestrator.chief.ledger import SCHEMA_VERSION, Ledger
from orchestrator.chief.oracle_host import OracleHost
from orchestrator.chief.replay import replay
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, TrialStatus
from tests.helpers import float_space, ledger_rows, make_search

FAILURE = {"retries_per_trial": 1, "max_consecutive_failed_trials": 100}


def _space(kind: str) -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    if kind == "grid":
        hp.Choice("a", [1, 2, 3])
        hp.Choice("b", [10, 20])
    else:
        hp.Float("x", 0.0, 1.0)
        hp.Int("n", 1, 8)
    return hp


ORACLES: dict[str, dict[str, Any]] = {
    "random": {"type": "random", "max_trials": 9, "seed": 7},
    "grid": {"type": "grid", "max_trials": 10, "seed": 7},  # 6 combinations: exhausts first
    "bayesian": {"type": "bayesian", "max_trials": 7, "seed": 7, "num_initial_points": 2},
    # max_epochs 3, factor 3: 2 brackets, 6 trials (under the 10-trial default cap).
    "hyperband": {"type": "hyperband", "seed": 7, "max_epochs": 3, "factor": 3},
}


@dataclass(frozen=True)
class Handed:
    trial_id: str
    attempt: int
    values: tuple[tuple[str, Any], ...]
    outcome: str


def _score(values: dict[str, Any]) -> float:
    return float(sum(v for k, v in values.items() if not k.startswith("tuner/")))


def _outcome(trial_id: str, attempt: int) -> AttemptStatus:
    n = int(trial_id)
    if n % 4 == 1:
        return AttemptStatus.FAILED  # final, no retry
    if n % 4 == 2 and attempt == 1:
        return AttemptStatus.INVALID  # retried once as attempt 2
    return AttemptStatus.COMPLETED


def _letters(trial_id: str) -> str:
    """A trial id spelled in letters (numbers are normalised out of error signatures)."""
    return "".join(chr(ord("a") + int(c)) if c.isdigit() else c for c in trial_id)


def drive(broker: TrialBroker, *, max_steps: int = 100) -> list[Handed]:
    """One worker runs trials to the end of the search (or ``max_steps`` trials)."""
    handed: list[Handed] = []
    for _ in range(max_steps):
        a = broker.create_trial("w0", wait_s=0)
        if a.kind is AssignmentKind.STOP:
            return handed
        # One worker that always ends its trial: the oracle can never be waiting.
        assert a.kind is AssignmentKind.TRIAL, f"WAIT with nothing running: {a.reason}"
        assert a.trial_id is not None and a.values is not None
        outcome = _outcome(a.trial_id, a.attempt)
        broker.report(a.trial_id, a.token, epoch=0, metrics={"loss": 1.0})
        metrics = {"score": _score(a.values)} if outcome is AttemptStatus.COMPLETED else {}
        broker.end_trial(
            a.trial_id,
            a.token,
            status=outcome,
            metrics=metrics,
            # Each trial its own error: the same error on 3 trials would end the
            # search (TrialBook's same-error rule; ids and numbers do not count).
            error_message="" if metrics else f"boom in {_letters(a.trial_id)}",
        )
        handed.append(Handed(a.trial_id, a.attempt, tuple(sorted(a.values.items())), outcome.value))
    return handed


def cut(broker: TrialBroker) -> str:
    """Hand out one more trial, report on it, then lose its worker (a requeue)."""
    a = broker.create_trial("w1", wait_s=0)
    assert a.kind is AssignmentKind.TRIAL and a.trial_id is not None
    broker.report(a.trial_id, a.token, epoch=0, metrics={"loss": 0.5})
    assert broker.worker_lost("w1", "node lost") == [a.trial_id]
    return a.trial_id


def views(broker: TrialBroker) -> dict[str, tuple[Any, ...]]:
    return {
        t.trial_id: (t.status, t.score, t.attempts, t.values, t.metrics, t.error_message)
        for t in broker.trials()
    }


def decision_state(host: OracleHost, kind: str) -> dict[str, Any]:
    o = host.oracle
    state: dict[str, Any] = {
        "seed": o.seed,
        "seed_state": o._seed_state,
        "tried_so_far": set(o._tried_so_far),
        "start_order": list(o.start_order),
        "end_order": list(o.end_order),
        "trials": {
            tid: (t.status, t.score, dict(t.hyperparameters.values)) for tid, t in o.trials.items()
        },
        "space": o.get_space().get_config(),
    }
    if kind == "hyperband":
        state["brackets"] = o._brackets
        state["current_bracket"] = o._current_bracket
        state["current_iteration"] = o._current_iteration
    if kind == "grid":
        ids = o._ordered_ids
        state["grid_memory"] = list(ids._memory)
        state["grid_next_index"] = dict(ids._next_index)
        state["grid_last_index"] = ids._last_index
        state["grid_populate_next"] = list(o._populate_next)
    return state


def restored_broker(search: Any, ledger_path: Path, clock: Any, **kw: Any) -> TrialBroker:
    """A fresh broker restored from the ledger alone, as Chief.resume builds it."""
    ledger = Ledger(ledger_path, clock=clock)
    broker = TrialBroker(
        search=search, ledger=ledger, oracle_host=OracleHost(search), clock=clock, long_poll_s=0
    )
    broker.restore(replay(ledger), **kw)
    broker.set_running("resumed")
    return broker


@pytest.mark.parametrize("kind", ORACLES)
def test_replay_round_trip_every_oracle(
    kind: str, make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    search = make_search(ORACLES[kind], failure=FAILURE)
    # The reference: the same operations, never interrupted.
    reference = make_broker(search, initial_space=_space(kind), ledger_name="reference.db")
    before_ref = drive(reference, max_steps=4)
    cut_ref = cut(reference)
    after_ref = drive(reference)

    first = make_broker(search, initial_space=_space(kind), ledger_name="ledger.db")
    before = drive(first, max_steps=4)
    in_flight = cut(first)
    assert (before, in_flight) == (before_ref, cut_ref)
    assert {h.outcome for h in before} >= {"COMPLETED", "FAILED"}

    # The replayed ledger says what the broker's memory says.
    replayed = replay(first.ledger)
    assert {
        tid: (r.status, r.score, r.attempt, r.values, r.metrics, r.error_message)
        for tid, r in replayed.records.items()
    } == views(first)
    assert list(replayed.queue) == [in_flight]
    assert replayed.in_flight == []
    assert replayed.records[in_flight].status is TrialStatus.PENDING
    assert replayed.records[in_flight].failures == 1
    assert replayed.records[in_flight].last_metrics == {"loss": 0.5}

    # A fresh broker restored from the ledger alone has the same records and queue ...
    first.apply_pending_ends()
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock)
    assert views(second) == views(first)
    # ... and the oracle's decision state (brackets, seed state, grid cursor) is equal.
    assert decision_state(second.oracle_host, kind) == decision_state(first.oracle_host, kind)

    # Continuing hands out exactly what the uninterrupted search did.
    after = drive(second)
    assert after[0].trial_id == in_flight and after[0].attempt == 2
    if kind == "bayesian":
        # The GP's restarts draw from an RNG the snapshot lacks (BUG-T3, tested
        # below): its proposals agree only to optimiser precision.
        assert [(h.trial_id, h.attempt, h.outcome) for h in after] == [
            (h.trial_id, h.attempt, h.outcome) for h in after_ref
        ]
        for got, want in zip(after, after_ref, strict=True):
            assert dict(got.values) == pytest.approx(dict(want.values), rel=1e-3, abs=1e-3)
    else:
        assert after == after_ref
        assert views(second) == views(reference)

    # No completed trial is re-created; new ids continue after the old ones.
    completed_before = {h.values for h in before if h.outcome == "COMPLETED"}
    assert not completed_before & {h.values for h in after}
    old_ids = {h.trial_id for h in before} | {in_flight}
    new_ids = [h.trial_id for h in after if h.trial_id not in old_ids and h.attempt == 1]
    assert all(int(t) > int(max(old_ids)) for t in new_ids)
    assert len(set(new_ids)) == len(new_ids)
    # Each trial has exactly one final event in the ledger.
    finals = [
        str(tid)
        for _, k, tid, _ in ledger_rows(tmp_path / "ledger.db")
        if k in ("completed", "failed")
    ]
    assert sorted(finals) == sorted(set(finals)) == sorted(views(second))
    assert second.state.value == "completed"


@pytest.mark.parametrize("kind", ["random", "bayesian"])
def test_max_trials_counts_across_restore(
    kind: str, make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    search = make_search(ORACLES[kind], failure=FAILURE)
    first = make_broker(search, initial_space=_space(kind))
    drive(first, max_steps=4)
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock)
    drive(second)
    assert len(second.trials()) == search.oracle.max_trials
    assert second.create_trial("w0", wait_s=0).kind is AssignmentKind.STOP


def test_grid_restore_hands_out_each_remaining_combination_once(
    make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    search = make_search(ORACLES["grid"], failure=FAILURE)
    first = make_broker(search, initial_space=_space("grid"))
    before = drive(first, max_steps=2)
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock)
    after = drive(second)
    combos = [dict(h.values) for h in before + after if h.attempt == 1]
    assert sorted((c["a"], c["b"]) for c in combos) == sorted(
        (a, b) for a in (1, 2, 3) for b in (10, 20)
    )


def test_restore_keeps_in_flight_lease_and_accepts_its_result_once(
    make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    search = make_search(ORACLES["random"], failure=FAILURE)
    first = make_broker(search, initial_space=float_space())
    a = first.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock, keep_leases=True)
    assert second.get_trial(a.trial_id).status is TrialStatus.RUNNING
    outcome = second.end_trial(
        a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.5}
    )
    assert outcome.recorded and outcome.final_status is TrialStatus.COMPLETED
    assert second.get_trial(a.trial_id).score == 0.5


def test_restore_without_leases_requeues_in_flight_as_next_attempt(
    make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    search = make_search(ORACLES["random"], failure=FAILURE)
    first = make_broker(search, initial_space=float_space())
    a = first.create_trial("w0", wait_s=0)
    assert a.trial_id is not None
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock, keep_leases=False)
    kinds = [k for _, k, tid, _ in ledger_rows(tmp_path / "ledger.db") if tid == a.trial_id]
    assert kinds == ["created", "assigned", "requeued"]
    again = second.create_trial("w9", wait_s=0)
    assert (again.trial_id, again.attempt, again.values) == (a.trial_id, 2, a.values)


def test_hyperband_runs_its_whole_budget(make_broker: Callable[..., TrialBroker]) -> None:
    """A default-sized Hyperband (max_epochs 9, factor 3) has more than 10 trials
    in its first iteration; the search must not stop after 10."""
    search = make_search({"type": "hyperband", "seed": 1, "max_epochs": 9, "factor": 3})
    broker = make_broker(search, initial_space=float_space())
    handed = drive(broker, max_steps=200)
    brackets = broker.oracle_host.oracle._brackets
    trials = {h.trial_id for h in handed}
    assert len(trials) > 10, f"stopped after {len(trials)} trials; brackets: {brackets}"


def test_bayesian_rng_state_is_restored(
    make_broker: Callable[..., TrialBroker], tmp_path: Path, fake_clock: Any
) -> None:
    import numpy as np

    search = make_search(ORACLES["bayesian"], failure=FAILURE)
    first = make_broker(search, initial_space=_space("bayesian"))
    drive(first, max_steps=5)  # past num_initial_points: the GP has drawn restarts
    first.apply_pending_ends()
    first.ledger.close()
    second = restored_broker(search, tmp_path / "ledger.db", fake_clock)
    want = first.oracle_host.oracle._random_state.get_state()
    got = second.oracle_host.oracle._random_state.get_state()
    assert np.array_equal(got[1], want[1]) and got[2] == want[2]


# ------------------------------------------------------------ O(1) per event


def test_events_table_is_insert_only_and_end_trial_writes_constant_rows(
    make_broker: Callable[..., TrialBroker], tmp_path: Path
) -> None:
    search = make_search({"type": "random", "max_trials": 60, "seed": 1}, failure=FAILURE)
    broker = make_broker(search, initial_space=float_space())
    path = tmp_path / "ledger.db"
    # Watch every write with SQLite's own change counter from a trigger-free view:
    # rows inserted/updated/deleted per end_trial, via total_changes on our own
    # connection is not visible, so compare table contents instead.
    snapshots: list[list[tuple[Any, ...]]] = []
    per_end: list[int] = []
    for i in range(50):
        a = broker.create_trial("w0", wait_s=0)
        assert a.trial_id is not None
        before = _all_event_rows(path)
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": i})
        after = _all_event_rows(path)
        # Insert-only: every earlier row is still there, byte for byte.
        assert after[: len(before)] == before
        per_end.append(len(after) - len(before))
        snapshots.append(after)
    # The same number of rows for the 1st end and the 50th: O(1), not O(trials).
    assert set(per_end) == {1}
    # The oracle snapshot is a single upserted row, never one per trial.
    with sqlite3.connect(path) as conn:
        (n_snap,) = conn.execute("SELECT COUNT(*) FROM oracle_snapshot").fetchone()
    assert n_snap == 1


def test_end_trial_statement_count_is_constant(
    make_broker: Callable[..., TrialBroker], tmp_path: Path
) -> None:
    """Count the SQL statements the ledger runs per end_trial with sqlite's trace hook."""
    search = make_search({"type": "random", "max_trials": 60, "seed": 1}, failure=FAILURE)
    broker = make_broker(search, initial_space=float_space())
    statements: list[str] = []
    broker.ledger._conn.set_trace_callback(statements.append)
    counts = []
    for i in range(40):
        a = broker.create_trial("w0", wait_s=0)
        assert a.trial_id is not None
        statements.clear()
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": i})
        writes = [s for s in statements if s.split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
        assert all(s.upper().startswith("INSERT INTO EVENTS") for s in writes), writes
        counts.append(len(statements))
    assert len(set(counts)) == 1, counts


def _all_event_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM events ORDER BY seq").fetchall()


def test_append_is_all_or_nothing_and_rejects_nan(tmp_path: Path) -> None:
    import pydantic

    from orchestrator.chief.events import SearchChanged, TrialCreated, TrialProgress
    from orchestrator.protocol.trials import SearchState

    state = {"hyperparameters": {"space": [], "values": {}}, "trial_id": "0"}
    with pytest.raises(pydantic.ValidationError, match="only finite numbers"):
        TrialProgress(trial_id="0", attempt=1, worker_id="w", epoch=0, metrics={"x": float("nan")})
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.append([SearchChanged(state=SearchState.RUNNING)])
        created = TrialCreated(trial_id="0", trial_state=state, values={})
        with pytest.raises(ValueError, match="Out of range float values"):
            ledger.append([created], snapshot={"x": float("nan")})
        real_execute = ledger._conn.execute
        calls = []

        class Boom(sqlite3.OperationalError):
            pass

        def failing_execute(sql: str, *args: Any) -> Any:
            calls.append(sql)
            if sql.startswith("INSERT INTO events") and len(calls) > 2:
                raise Boom("disk I/O error")
            return real_execute(sql, *args)

        class Conn:
            def __getattr__(self, name: str) -> Any:
                return getattr(real_conn, name)

            execute = staticmethod(failing_execute)

        real_conn = ledger._conn
        ledger._conn = Conn()  # type: ignore[assignment]
        try:
            with pytest.raises(Boom, match="disk I/O"):
                ledger.append([created, SearchChanged(state=SearchState.CANCELLED)])
        finally:
            ledger._conn = real_conn
        assert ledger.count() == 1
        assert [e.kind for e in ledger.events()] == [EventKind.SEARCH]


def test_ledger_is_wal_and_read_only_refuses_writes(tmp_path: Path) -> None:
    from orchestrator.chief.events import SearchChanged
    from orchestrator.errors import LedgerError
    from orchestrator.protocol.trials import SearchState

    path = tmp_path / "l.db"
    with Ledger(path) as ledger:
        ledger.append([SearchChanged(state=SearchState.RUNNING)])
        (mode,) = ledger._conn.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
    with Ledger(path, read_only=True) as ro:
        assert ro.count() == 1
        with pytest.raises(LedgerError, match="read-only"):
            ro.append([SearchChanged(state=SearchState.RUNNING)])
    with pytest.raises(LedgerError, match="no ledger here"):
        Ledger(tmp_path / "missing.db", read_only=True)


def test_a_new_ledger_appears_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that opens the search directory while the chief starts finds no
    ledger or a complete one, never an empty file without tables (the user
    audit's U9: `ktc report` during start-up read "no such table: meta")."""
    import orchestrator.chief.ledger as ledger_module

    path = tmp_path / "ledger.db"
    seen: list[tuple[bool, list[str]]] = []
    rename = os.rename

    def checked_rename(src: str, dst: Path) -> None:
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as conn:
            tables = [
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            ]
        seen.append((Path(dst).exists(), tables))
        rename(src, dst)

    monkeypatch.setattr(ledger_module.os, "rename", checked_rename)
    Ledger(path)
    assert [(exists, sorted(tables)) for exists, tables in seen] == [
        (False, ["events", "meta", "oracle_snapshot"])
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert Ledger(path, read_only=True).meta()["schema_version"] == SCHEMA_VERSION
