"""Ledgers written before typed events (schema 1) still open.

The two ledgers under tests/data/v1 were written by the code of commit
533603f (tests/data/v1/make_v1_ledgers.py says how). ``good`` replays and
resumes; ``damaged`` holds the COMPLETED event of issue 11's symptom 2
(``"hyperparameters": "x"``): status and results show what decodes and name
its seq, and resume refuses without changing anything.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.events import SCHEMA_VERSION, TrialCompleted
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.cli.main import main
from orchestrator.errors import LedgerError
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus
from tests.unit.test_trial_book_property import book_state

DATA = Path(__file__).resolve().parents[1] / "data" / "v1"


@pytest.fixture
def v1_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    name = getattr(request, "param", "good")
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM events ORDER BY seq").fetchall()


def test_a_v1_ledger_replays_with_every_trial_as_it_was(v1_dir: Path) -> None:
    with Ledger(v1_dir / "ledger.db", read_only=True) as ledger:
        assert ledger.schema_version() == 1
        replayed = replay(ledger, strict=True)
    records = replayed.records
    assert {tid: (r.status, r.attempt, r.failures) for tid, r in records.items()} == {
        "0": (TrialStatus.COMPLETED, 1, 0),
        "1": (TrialStatus.FAILED, 1, 1),
        "2": (TrialStatus.COMPLETED, 2, 1),
        "3": (TrialStatus.RUNNING, 2, 1),
    }
    # The values its build registered (schema 1 kept them in the trial state).
    assert "built_in_trial" in records["0"].values
    assert records["0"].score == pytest.approx(0.4)
    assert records["1"].error_message == "bad"
    # A requeue after a raise counted; the lost worker's too (failures went up).
    assert records["3"].error_message == "worker w1 died: the node went away"
    assert [f.trial_id for f in replayed.in_flight] == ["3"]
    assert replayed.state is SearchState.RUNNING


def test_resume_migrates_a_v1_ledger_and_continues_it(v1_dir: Path) -> None:
    before = _rows(v1_dir / "ledger.db")
    chief = Chief.resume(v1_dir, long_poll_s=0, keep_leases=False)
    try:
        assert chief.ledger.schema_version() == SCHEMA_VERSION
        rows = _rows(v1_dir / "ledger.db")
        assert [r[0] for r in rows[: len(before)]] == [r[0] for r in before]  # same seqs
        # Every old row decodes as a typed event now, the in-flight one was requeued.
        events = list(chief.ledger.events())
        done = [e.event for e in events if isinstance(e.event, TrialCompleted)]
        assert [(e.trial_id, e.attempt) for e in done] == [("0", 1), ("2", 2)]
        broker = chief.broker
        a = broker.create_trial("w0", wait_s=0)
        assert a.kind is AssignmentKind.TRIAL and (a.trial_id, a.attempt) == ("3", 3)
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
        assert book_state(replay(chief.ledger, strict=True).book) == book_state(broker.book)
        assert broker.get_trial("0").attempts == 1  # finished trials keep their attempts
    finally:
        chief.close(grace_s=0)


@pytest.mark.parametrize("v1_dir", ["damaged"], indirect=True)
def test_a_damaged_ledger_is_shown_up_to_the_bad_seq_and_never_resumed(
    v1_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger_path = v1_dir / "ledger.db"
    with Ledger(ledger_path, read_only=True) as ledger:
        with pytest.raises(
            LedgerError, match=r"seq 21 \('completed', trial '4'\).*hyperparameters"
        ):
            replay(ledger, strict=True)
        replayed = replay(ledger)
    assert [str(e) for e in replayed.damaged] == [
        "ledger event seq 21 ('completed', trial '4') does not decode: hyperparameters: "
        "Input should be a valid dictionary"
    ]
    assert replayed.records["2"].status is TrialStatus.COMPLETED

    assert main(["results", str(v1_dir)]) == 0
    out, err = capsys.readouterr()
    assert "seq 21" in err and "COMPLETED" in out
    assert main(["status", str(v1_dir)]) == 0
    out, _ = capsys.readouterr()
    assert "damaged" in out and "seq 21" in out

    before = (_rows(ledger_path), sorted(p.name for p in v1_dir.iterdir()))
    assert main(["resume", str(v1_dir)]) == 1
    _, err = capsys.readouterr()
    assert "cannot resume: ledger event seq 21" in err
    assert (_rows(ledger_path), sorted(p.name for p in v1_dir.iterdir())) == before


def test_a_ledger_of_an_unknown_schema_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.set_meta({"schema_version": 99})
        with pytest.raises(LedgerError, match="schema version 99 is not one this ktcluster reads"):
            replay(ledger)
