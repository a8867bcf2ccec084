"""When a worker process's warm spare is due: ``QuotaProgress`` (workers/actor.py)."""

from __future__ import annotations

import threading

import pytest

from workers.actor import QuotaProgress


def due_in_thread(progress: QuotaProgress, lead: int) -> tuple[threading.Thread, list[bool]]:
    out: list[bool] = []
    thread = threading.Thread(target=lambda: out.append(progress.due(lead)), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize(
    ("quota", "lead", "due_at"), [(3, 1, 3), (3, 2, 2), (3, 3, 1), (3, 9, 1), (1, 1, 1)]
)
def test_due_when_one_of_the_last_lead_trials_starts(quota: int, lead: int, due_at: int) -> None:
    progress = QuotaProgress()
    thread, out = due_in_thread(progress, lead)
    progress.begin(quota)
    for started in range(1, quota + 1):
        progress.trial_started(started)
        thread.join(timeout=0.2 if started < due_at else 5.0)
        assert thread.is_alive() is (started < due_at), (started, out)
    assert out == [True]


def test_not_due_when_the_run_ends_first() -> None:
    progress = QuotaProgress()
    thread, out = due_in_thread(progress, 1)
    progress.begin(3)
    progress.trial_started(1)  # then STOP: the search is over, or the worker drained
    progress.end()
    thread.join(timeout=5.0)
    assert out == [False]


def test_never_due_without_a_quota() -> None:
    progress = QuotaProgress()
    thread, out = due_in_thread(progress, 1)
    progress.begin(0)  # recycle_after_trials: 0
    for started in range(1, 6):
        progress.trial_started(started)
    thread.join(timeout=0.2)
    assert thread.is_alive()
    progress.end()
    thread.join(timeout=5.0)
    assert out == [False]


def test_asked_after_the_fact() -> None:
    """The fleet may ask after the trial started (or after the run ended)."""
    progress = QuotaProgress()
    progress.begin(2)
    progress.trial_started(1)
    progress.trial_started(2)
    assert progress.due(1) is True
    progress.end()
    assert progress.due(1) is False
