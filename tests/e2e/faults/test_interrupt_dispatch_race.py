"""The race behind the flaky
``test_cancel_interrupt.py::test_ctrl_c_finish_lets_running_trials_end``
(issue 11, item 9), held open deterministically.

``TrialBroker.create_trial`` (orchestrator/chief/broker.py) asks the oracle
outside the broker lock. Before 235ca03 it leased the trial the oracle returned
without checking dispatch again, so a Ctrl-C or cancel (``stop_dispatch``) that
landed during the oracle call did not stop that worker:

- ``--on-interrupt finish``, with the last running trial ending during the
  call: the search became INTERRUPTED, and then the new trial was CREATED and
  ASSIGNED after the ``interrupted`` event. The worker's next Report was told
  to stop, and its EndTrial(STOPPED) became REQUEUED "stopped by the chief"
  (or, if the chief closed first, the attempt was left in flight).
- ``finish`` with a trial still running: a new trial started after Ctrl-C.
- ``requeue`` (the default) and ``ktc cancel``: ASSIGNED after the terminal
  event, as in the first case.

On a loaded machine the oracle call is slow enough for the e2e test to land in
it. Here a gate holds the call open. Since the fix, the trial the oracle made
is recorded PENDING (for a resume) and the worker gets STOP.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.broker import TrialBroker
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus
from tests.helpers import float_space, make_search


def _rows(path: Path) -> list[tuple[int, str, str | None, str]]:
    """(seq, kind, trial_id, payload) of every ledger row, read with its own connection."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [
            (int(seq), str(kind), trial_id, str(payload))
            for seq, kind, trial_id, payload in conn.execute(
                "SELECT seq, kind, trial_id, payload FROM events ORDER BY seq"
            )
        ]


@pytest.mark.parametrize(
    ("requeue_running", "last_trial_ends_during_the_call"),
    [(False, True), (False, False), (True, False)],
    ids=["finish-last-trial-ends", "finish-trial-running", "requeue"],
)
def test_stop_during_an_oracle_call_hands_out_no_trial(
    make_broker: Callable[..., TrialBroker],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    requeue_running: bool,
    last_trial_ends_during_the_call: bool,
) -> None:
    broker = make_broker(
        make_search({"type": "random", "max_trials": 6, "seed": 1}), initial_space=float_space()
    )
    running = broker.create_trial("w0", wait_s=0)
    assert running.trial_id is not None and running.token is not None

    host = broker.oracle_host
    create = host.create_trial
    inside, release = threading.Event(), threading.Event()

    def held_open() -> Any:
        inside.set()
        release.wait(10.0)
        return create()

    monkeypatch.setattr(host, "create_trial", held_open)
    answers: list[Any] = []
    w1 = threading.Thread(target=lambda: answers.append(broker.create_trial("w1", wait_s=5)))
    w1.start()
    try:
        assert inside.wait(10.0), "w1's CreateTrial never reached the oracle"
        broker.stop_dispatch(
            SearchState.INTERRUPTED, "interrupted", requeue_running=requeue_running
        )
        if last_trial_ends_during_the_call and not requeue_running:
            broker.end_trial(
                running.trial_id,
                running.token,
                status=AttemptStatus.COMPLETED,
                metrics={"score": 0.5},
            )
    finally:
        release.set()
        w1.join(10.0)
    assert answers, "w1's CreateTrial did not return"

    # Only w0's trial was leased before the stop: any other trial's row is late.
    late = [
        (seq, kind, tid)
        for seq, kind, tid, _ in _rows(tmp_path / "ledger.db")
        if tid is not None and tid != running.trial_id
    ]
    assert answers[0].kind is AssignmentKind.STOP, (
        f"CreateTrial answered {answers[0].kind.name} (trial {answers[0].trial_id}) after "
        f"stop_dispatch; ledger rows of other trials: {late}"
    )
    assert not [row for row in late if row[1] == "assigned"], late
    # The trial the oracle made waits for a resume.
    made = [tid for _, kind, tid in late if kind == "created"]
    assert made and all(broker.get_trial(tid).status is TrialStatus.PENDING for tid in made)
    if not requeue_running and not last_trial_ends_during_the_call:
        broker.end_trial(
            running.trial_id, running.token, status=AttemptStatus.COMPLETED, metrics={"score": 1.0}
        )
    assert broker.state is SearchState.INTERRUPTED
