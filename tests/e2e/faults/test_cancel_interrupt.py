"""``ktc cancel`` and Ctrl-C (SIGINT to ``ktc submit``), each followed by
``ktc resume``; and ``--on-interrupt finish``.

The submit process exits (cancel: 0, interrupt: 130) printing the exact
``ktc resume DIR`` line; the ledger holds no attempt in flight (running
trials were requeued, or finished with ``finish``); resume completes the
search to max_trials without re-running anything.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.events import EventKind
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.protocol.trials import TrialStatus
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcProcess,
    KtcRunner,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    completed_counts,
    ktc_status,
    ledger_events,
    run_ktc,
    running_worker,
    search_yaml,
    wait_status,
)

pytestmark = pytest.mark.slow

MAX_TRIALS = 6


def _mid_search(doc: dict[str, Any]) -> bool:
    done = sum(1 for t in doc["trials"] if t["status"] == "COMPLETED")
    return done >= 1 and running_worker(doc, min_epoch=1) is not None


def _start(ktc: KtcRunner, *extra: str) -> tuple[KtcProcess, set[str]]:
    run = ktc.submit(search_yaml(max_trials=MAX_TRIALS, epochs=4), cluster_yaml(), *extra)
    doc = wait_status(run.search_dir, _mid_search, STARTUP_S, "a trial in flight", run)
    running = {w["trial_id"] for w in doc["workers"] if w["trial_id"]}
    return run, running


def _assert_nothing_assigned_after_stop(directory: Path, state: str) -> None:
    """No trial was leased after the event that stopped the search.

    ``_mid_search`` first holds at the first trial's end, when that worker is
    inside the oracle call, so on a loaded machine Ctrl-C often lands in it.
    Before 235ca03, ``TrialBroker.create_trial`` then leased the trial the
    oracle made after the search had stopped (reproduced deterministically in
    test_interrupt_dispatch_race.py); the worker was told to stop, and the
    ledger got REQUEUED "stopped by the chief" or an attempt left in flight.
    """
    events = ledger_events(directory)
    stop = next(
        (e.seq for e in events if e.kind is EventKind.SEARCH and e.payload["state"] == state),
        None,
    )
    late = [
        f"seq {e.seq}: trial {e.trial_id} attempt {e.attempt} -> {e.worker_id}"
        for e in events
        if stop is not None and e.seq > stop and e.kind is EventKind.ASSIGNED
    ]
    assert not late, f"trials assigned after the search was {state}: {late}"


def _assert_consistent_stop(directory: Path, state: str) -> set[str]:
    """The stopped search's ledger: the final state, and no attempt left in flight."""
    _assert_nothing_assigned_after_stop(directory, state)
    ledger = Ledger(directory / "ledger.db", read_only=True)
    try:
        replayed = replay(ledger)
    finally:
        ledger.close()
    assert replayed.state.value == state, replayed.message
    assert replayed.in_flight == [], f"attempts left in flight: {replayed.in_flight}"
    running = [r.trial_id for r in replayed.records.values() if r.status is TrialStatus.RUNNING]
    assert not running, f"trials still RUNNING in the ledger: {running}"
    assert_no_duplicate_or_lost(directory, finished=False)
    return set(completed_counts(ledger_events(directory)))


def _resume_to_end(ktc: KtcRunner, directory: Path, done_before: set[str]) -> None:
    last_seq = ledger_events(directory)[-1].seq
    resumed = ktc.resume(directory)
    assert resumed.wait(180.0) == 0, resumed.output()[-3000:]
    events = assert_no_duplicate_or_lost(directory, expected_trials=MAX_TRIALS)
    again = {e.trial_id for e in events if e.seq > last_seq and e.kind is EventKind.ASSIGNED}
    assert not (again & done_before), f"completed trials re-run: {again & done_before}"
    assert ktc_status(directory)["state"] == "completed"


def _resume_line(run: KtcProcess) -> None:
    """The output names the resume command (whitespace-normalised: see the exact check)."""
    flat = " ".join(run.output().split())
    assert f"resume with: ktc resume {run.search_dir}" in flat, run.output()[-2000:]


def _exact_resume_line(run: KtcProcess) -> None:
    """The command is on one line, so it can be copied from a log as is."""
    lines = [line.strip() for line in run.output().splitlines()]
    assert f"resume with:  ktc resume {run.search_dir}" in lines, run.output()[-2000:]


def test_cancel_then_resume(ktc: KtcRunner) -> None:
    run, running = _start(ktc)
    done = run_ktc("cancel", str(run.search_dir))
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout and f"ktc resume {run.search_dir}" in done.stdout
    assert run.wait(60.0) == 0, run.output()[-3000:]
    _resume_line(run)
    done_before = _assert_consistent_stop(run.search_dir, "cancelled")
    events = ledger_events(run.search_dir)
    requeued = {e.trial_id for e in events if e.kind is EventKind.REQUEUED}
    assert running - done_before <= requeued, "in-flight trials were not requeued by cancel"
    assert ktc_status(run.search_dir)["state"] == "cancelled"
    _resume_to_end(ktc, run.search_dir, done_before)


def test_ctrl_c_then_resume(ktc: KtcRunner) -> None:
    run, running = _start(ktc)
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(60.0) == 130, run.output()[-3000:]
    _resume_line(run)
    done_before = _assert_consistent_stop(run.search_dir, "interrupted")
    events = ledger_events(run.search_dir)
    requeued = {
        e.trial_id
        for e in events
        if e.kind is EventKind.REQUEUED and "interrupted" in e.payload.get("reason", "")
    }
    assert running - done_before <= requeued, "in-flight trials were not requeued by Ctrl-C"
    # Requeues by an interrupt are not failures.
    assert all(e.payload.get("failures", 0) == 0 for e in events if e.kind is EventKind.REQUEUED)
    _resume_to_end(ktc, run.search_dir, done_before)
    _exact_resume_line(run)


def test_ctrl_c_finish_lets_running_trials_end(ktc: KtcRunner) -> None:
    run, running = _start(ktc, "--on-interrupt", "finish")
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(60.0) == 130, run.output()[-3000:]
    _resume_line(run)
    done_before = _assert_consistent_stop(run.search_dir, "interrupted")
    events = ledger_events(run.search_dir)
    assert running <= done_before, (
        f"trials running at Ctrl-C did not finish: {running - done_before}"
    )
    assert not any(e.kind is EventKind.REQUEUED for e in events)
    _resume_to_end(ktc, run.search_dir, done_before)
