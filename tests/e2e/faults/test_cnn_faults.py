"""The fault tests on a real model: the built-in ``cnn`` on digits.

The cnn space declares its per-block hyperparameters under
``hp.conditional_scope``, so a trial's Keras Tuner state carries conditions.
That is what broke resume before: a trial in flight at a chief SIGKILL was
sent again after ``ktc resume``, and the worker crashed with ``TypeError:
Object of type Parent is not JSON serializable``.

The model is tiny (``digits-cnn-tiny.yaml``: 4 to 8 filters, 3 epochs, a few
trials), but each ``ktc submit`` or ``ktc resume`` still pays for Ray's start
and a TensorFlow import in every worker (about 15 s on 2 loaded cores). So the
three faults share one search, and each is checked when it happens:

1. a worker SIGKILLed mid-trial: that trial is requeued and runs again;
2. Ctrl-C (SIGINT to ``ktc submit``), then ``ktc resume``;
3. the resumed chief SIGKILLed with 2 trials in flight, then ``ktc resume``
   again (a resume of a resumed search).

After each fault, the trials it interrupted run exactly once more, as their
next attempt, and the trials finished before it never run again. Each worker
process is recycled after every trial with a warm spare beside it, so the
faults also hit the hand-over from a process to its spare.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.faults.conftest import (
    STARTUP_S,
    EventKind,
    KtcProcess,
    KtcRunner,
    LedgerEvent,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    ktc_status,
    ledger_events,
    live_status,
    wait_gone,
    wait_status,
    worker_pids,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

TINY_CNN = Path(__file__).with_name("digits-cnn-tiny.yaml")
RESUME_S = 240.0  # Ray, a TensorFlow import per worker, and the trials left


def cnn_search(max_trials: int) -> dict[str, Any]:
    data = yaml.safe_load(TINY_CNN.read_text())
    data["oracle"]["max_trials"] = max_trials
    return dict(data)


# ------------------------------------------------------------ ledger facts


def completed_attempts(events: list[LedgerEvent]) -> dict[str, int]:
    """trial id -> the attempt that completed it."""
    return {
        e.trial_id: int(e.attempt or 0)
        for e in events
        if e.kind is EventKind.COMPLETED and e.trial_id
    }


def in_flight(events: list[LedgerEvent]) -> dict[str, int]:
    """trial id -> attempt, for each trial whose last transition is ASSIGNED."""
    last: dict[str, LedgerEvent] = {}
    for e in events:
        if e.trial_id and e.kind is not EventKind.PROGRESS:
            last[e.trial_id] = e
    return {tid: int(e.attempt or 0) for tid, e in last.items() if e.kind is EventKind.ASSIGNED}


def assigned_after(events: list[LedgerEvent], seq: int) -> dict[str, list[int]]:
    """trial id -> the attempts assigned after ``seq``, in order."""
    out: dict[str, list[int]] = {}
    for e in events:
        if e.seq > seq and e.kind is EventKind.ASSIGNED and e.trial_id:
            out.setdefault(e.trial_id, []).append(int(e.attempt or 0))
    return out


def assert_each_ran_once_more(
    events: list[LedgerEvent], after_seq: int, interrupted: Mapping[str, int], what: str
) -> None:
    """Every trial in ``interrupted`` (id -> its attempt at the fault) was assigned
    exactly once after ``after_seq``, as the next attempt, and completed with it."""
    again = assigned_after(events, after_seq)
    done = completed_attempts(events)
    for tid, attempt in sorted(interrupted.items()):
        assert again.get(tid) == [attempt + 1], (
            f"trial {tid} (attempt {attempt} at the {what}) was assigned {again.get(tid)} "
            f"after it; expected exactly [{attempt + 1}]"
        )
        assert done.get(tid) == attempt + 1, (
            f"trial {tid}: completed by attempt {done.get(tid)}, expected {attempt + 1}"
        )


def assert_finished_kept(
    events: list[LedgerEvent], after_seq: int, finished: Mapping[str, int], what: str
) -> None:
    """Trials completed before a fault were never assigned again, and keep their attempt."""
    again = set(assigned_after(events, after_seq)) & set(finished)
    assert not again, f"trials completed before the {what} ran again: {sorted(again)}"
    assert {t: a for t, a in completed_attempts(events).items() if t in finished} == dict(finished)


def failed_attempts(events: list[LedgerEvent]) -> list[str]:
    """Attempts that failed, or were requeued because they raised or lost their worker."""
    return [
        f"seq {e.seq} {e.kind.value} trial {e.trial_id} attempt {e.attempt} "
        f"on {e.worker_id}: {e.payload.get('reason') or e.payload.get('error_message')}"
        for e in events
        if e.kind is EventKind.FAILED or (e.kind is EventKind.REQUEUED and e.payload["counted"])
    ]


# ------------------------------------------------------------- live status


def busy_workers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(w) for w in doc.get("workers", []) if w.get("trial_id") and w.get("pid")]


def early(worker: Mapping[str, Any]) -> bool:
    """At most the first of the 3 epochs reported: a whole epoch is still to go,
    so the trial cannot end between this status and the fault."""
    epoch = worker.get("epoch")
    return epoch is None or epoch == 0


def both_busy_early(doc: Mapping[str, Any]) -> bool:
    """Both workers hold a trial, both early: exactly these 2 are in flight at a
    fault, and no CreateTrial is in progress."""
    busy = busy_workers(doc)
    return len(busy) == 2 and all(early(w) for w in busy)


def completed_ids(doc: Mapping[str, Any]) -> set[str]:
    return {t["trial_id"] for t in doc["trials"] if t["status"] == "COMPLETED"}


def offline_state(directory: Path) -> str:
    """The state ``ktc status`` shows with no live chief (in-process: no
    interpreter start, which costs seconds on a loaded machine)."""
    doc = live_status(directory)
    assert doc is not None, f"no status document for {directory}"
    return str(doc["state"])


def sigkill_chief(run: KtcProcess) -> None:
    """SIGKILL ``ktc``; its workers must not outlive it (bounded wait)."""
    chief = json.loads((run.search_dir / "chief.json").read_text())
    assert chief["pid"] == run.pid
    workers = worker_pids(run.search_dir)
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(10.0) == -signal.SIGKILL
    assert not wait_gone(workers, 30.0), "worker processes outlived the killed chief"


# ------------------------------------------------------------------- test


def test_cnn_search_survives_worker_kill_ctrl_c_and_chief_kill(ktc: KtcRunner) -> None:
    # Ctrl-C lands with 3 or 4 trials created (5 if the workers' trials are
    # badly out of step), and the chief kill needs 2 more.
    max_trials = 7
    run = ktc.submit(cnn_search(max_trials), cluster_yaml(recycle_after_trials=1))
    directory = run.search_dir

    # 1. SIGKILL a worker early in its trial: Ray's actor-death signal requeues
    #    the trial (the lease is 30 s), and it runs again as attempt 2.
    doc = wait_status(
        directory,
        lambda d: any(early(w) for w in busy_workers(d)),
        STARTUP_S,
        "a worker early in a trial",
        run,
    )
    victim = next(w for w in busy_workers(doc) if early(w))
    victim_trial, victim_worker = victim["trial_id"], victim["worker_id"]
    os.kill(int(victim["pid"]), signal.SIGKILL)
    wait_until(
        lambda: any(
            e.kind is EventKind.REQUEUED and e.trial_id == victim_trial
            for e in ledger_events(directory)
        ),
        15.0,
        interval_s=0.2,
        what=f"trial {victim_trial} requeued after its worker was killed",
    )

    # 2. Ctrl-C (the default: requeue) once the victim's trial runs again (it
    #    may be running still: then Ctrl-C requeues it too) and both workers,
    #    the killed one replaced, are early in a trial.
    wait_status(
        directory,
        lambda d: (
            victim_trial in completed_ids(d) | {w["trial_id"] for w in busy_workers(d)}
            and both_busy_early(d)
        ),
        STARTUP_S,
        f"trial {victim_trial} running again and both workers early in a trial",
        run,
    )
    os.kill(run.pid, signal.SIGINT)
    assert run.wait(60.0) == 130, run.output()[-3000:]
    events = ledger_events(directory)
    interrupt_seq = events[-1].seq
    requeues = [e for e in events if e.kind is EventKind.REQUEUED]
    assert (requeues[0].trial_id, requeues[0].attempt, requeues[0].worker_id) == (
        victim_trial,
        1,
        victim_worker,
    )
    assert "died" in requeues[0].payload["reason"], requeues[0].payload
    assert assigned_after(events, 0)[victim_trial] == [1, 2]
    assert len(failed_attempts(events)) == 1, failed_attempts(events)  # the kill's only
    assert in_flight(events) == {}, f"attempts left in flight after Ctrl-C: {in_flight(events)}"
    finished_1 = completed_attempts(events)
    requeued_1 = {
        e.trial_id: int(e.attempt or 0)
        for e in requeues
        if e.trial_id and "interrupted" in e.payload["reason"]
    }
    assert len(requeued_1) == 2, f"expected the 2 running trials requeued by Ctrl-C: {requeues}"
    assert offline_state(directory) == "interrupted"

    # 3. Resume; once the requeued trials have run again, SIGKILL the chief with
    #    2 trials in flight.
    resumed = ktc.resume(directory)
    wait_status(
        directory,
        lambda d: set(requeued_1) <= completed_ids(d) and both_busy_early(d),
        RESUME_S,
        f"trials {sorted(requeued_1)} completed again and both workers early in a trial",
        resumed,
    )
    sigkill_chief(resumed)
    events = ledger_events(directory)
    kill_seq = events[-1].seq
    assert_each_ran_once_more(events, interrupt_seq, requeued_1, "Ctrl-C")
    assert_finished_kept(events, interrupt_seq, finished_1, "Ctrl-C")
    finished_2 = completed_attempts(events)
    flying = in_flight(events)
    assert len(flying) == 2, f"expected 2 trials in flight at the chief kill, got {flying}"
    assert offline_state(directory) == "interrupted"

    # 4. Resume to the end.
    final = ktc.resume(directory)
    assert final.wait(RESUME_S) == 0, final.output()[-3000:]
    assert "resuming:" in final.output()
    events = assert_no_duplicate_or_lost(directory, expected_trials=max_trials)
    assert_each_ran_once_more(events, kill_seq, flying, "chief SIGKILL")
    assert_finished_kept(events, kill_seq, finished_2, "chief SIGKILL")
    # The worker kill is the only failed attempt: nothing raised on a resumed
    # trial (the Parent/JSON TypeError) and no worker was lost.
    assert len(failed_attempts(events)) == 1, failed_attempts(events)
    # The victim ran again after its worker died, once per fault that hit it.
    victim_attempts = assigned_after(events, 0)[victim_trial]
    assert victim_attempts == list(range(1, len(victim_attempts) + 1)), victim_attempts
    assert completed_attempts(events)[victim_trial] == victim_attempts[-1] >= 2
    status = ktc_status(directory)
    assert status["state"] == "completed"
    assert [t["status"] for t in status["trials"]] == ["COMPLETED"] * max_trials
    assert {t["trial_id"]: t["attempts"] for t in status["trials"]} == completed_attempts(events)
