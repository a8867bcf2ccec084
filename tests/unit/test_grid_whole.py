"""Issue 14.8: a grid without max_trials runs every point (12 > the old default
of 10), and the chief completes the search when the oracle answers STOPPED."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.chief.broker import TrialBroker
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState
from tests.helpers import make_search


def test_grid_without_max_trials_runs_all_twelve_points(
    make_broker: Callable[..., TrialBroker],
) -> None:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    hp.Choice("b", [10, 20, 30, 40])
    search = make_search({"type": "grid", "seed": 7})
    assert search.oracle.max_trials is None
    broker = make_broker(search, initial_space=hp)
    seen = []
    for _ in range(20):
        a = broker.create_trial("w0", wait_s=0)
        if a.kind is AssignmentKind.STOP:
            break
        assert a.kind is AssignmentKind.TRIAL and a.trial_id is not None and a.values
        seen.append((a.values["a"], a.values["b"]))
        broker.end_trial(
            a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.5}
        )
    assert sorted(seen) == sorted((x, y) for x in (1, 2, 3) for y in (10, 20, 30, 40))
    assert broker.summary().state is SearchState.COMPLETED
