"""A Keras Tuner user's tuner behaves as Keras Tuner's own once RemoteOracle is
attached: one regression test per difference Keras Tuner's own tuner tests
found (``tests/kt_suite``, ``make kt-suite``). Real chief, real gRPC; the
tuners' ``run_trial`` returns a score with no Keras model, so each test takes
about a second.

- r1 ``get_space()`` after ``search()`` has what the last trial registered.
- r2 ``remaining_trials()`` is ``max_trials`` minus the search's trials.
- r3 ``oracle.hyperparameters`` is the space after ``attach`` and grows with it.
- r4 a second tuner on the same project directory starts (``overwrite=False``).
- r5 ``oracle.trials`` have their status and score after ``search()``.
- r6 a search whose trials all fail raises Keras Tuner's RuntimeError.
- r7 an oracle that answers IDLE with nothing running is asked again at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.errors import SearchFailedError
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import make_search

keras_tuner = pytest.importorskip("keras_tuner")

from orchestrator.protocol.oracle_client import RemoteOracle  # noqa: E402  (imports keras_tuner)
from tests.kt_suite.hosting import ChiefPerTuner  # noqa: E402

StartChief = Callable[..., tuple[Chief, Any]]
OBJECTIVE = {"name": "score", "direction": "max"}


def _objective() -> Any:
    return keras_tuner.Objective("score", "max")


class ScoreTuner(keras_tuner.RandomSearch):  # type: ignore[misc]
    """Scores a trial by its ``x``; ``late`` is registered only while a trial runs."""

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        hp = trial.hyperparameters
        hp.Int("late", 1, 3)
        return {"score": float(hp.Int("x", 0, 100))}


class ScoreHyperband(keras_tuner.Hyperband):  # type: ignore[misc]
    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        return {"score": float(trial.hyperparameters.Int("x", 0, 100))}


class ScoreOracleTuner(keras_tuner.Tuner):  # type: ignore[misc]
    """ScoreTuner's trials with an oracle of the caller's."""

    run_trial = ScoreTuner.run_trial


def declare_x(hp: Any) -> None:
    """A hypermodel that only declares the space (the tuner's constructor builds it)."""
    hp.Int("x", 0, 100)


@pytest.fixture
def connect() -> Iterator[Callable[..., TrialClient]]:
    """``connect(endpoint, worker_id)``: a TrialClient, closed at teardown."""
    clients: list[TrialClient] = []

    def make(endpoint: Any, worker_id: str = "w0") -> TrialClient:
        client = TrialClient(endpoint.address, endpoint.token, worker_id=worker_id)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _tuner(cls: Any, directory: Path, **kwargs: Any) -> Any:
    return cls(hypermodel=declare_x, objective=_objective(), directory=str(directory), **kwargs)


def test_r1_get_space_after_search_has_what_the_last_trial_registered(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    chief, ep = start_chief(make_search({"type": "random", "max_trials": 1}, objective=OBJECTIVE))
    tuner = _tuner(ScoreTuner, tmp_path, max_trials=1)
    RemoteOracle.attach(tuner, connect(ep), wait_s=1.0)
    tuner.search()
    assert chief.wait(30) is SearchState.COMPLETED
    assert {hp.name for hp in tuner.oracle.get_space().space} == {"x", "late"}
    # The chief's own answer, not the worker's cache.
    assert {hp["config"]["name"] for hp in chief.broker.space_config()["space"]} == {"x", "late"}


def test_r2_remaining_trials_counts_every_workers_trials(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    chief, ep = start_chief(make_search({"type": "random", "max_trials": 5}, objective=OBJECTIVE))
    tuner = _tuner(ScoreTuner, tmp_path, max_trials=5)
    RemoteOracle.attach(tuner, connect(ep, "w0"), wait_s=1.0)
    assert tuner.remaining_trials == 5
    other = RemoteOracle(connect(ep, "w1"), objective=_objective(), max_trials=5, wait_s=1.0)
    trial = other.create_trial("w1")
    assert trial.status == "RUNNING"
    assert tuner.remaining_trials == 4  # another worker's trial counts, as in KT's one oracle
    other.update_trial(trial.trial_id, {"score": 1.0})
    trial.status = "COMPLETED"
    other.end_trial(trial)
    tuner.search()
    assert tuner.remaining_trials == 0
    uncapped = RemoteOracle(connect(ep, "w2"), objective=_objective(), max_trials=None)
    assert uncapped.remaining_trials() is None


def test_r3_hyperparameters_are_the_space_after_attach_and_grow_with_it(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    _, ep = start_chief(make_search({"type": "random", "max_trials": 2}, objective=OBJECTIVE))
    tuner = _tuner(ScoreTuner, tmp_path, max_trials=2)
    RemoteOracle.attach(tuner, connect(ep), wait_s=1.0)
    assert [hp.name for hp in tuner.oracle.hyperparameters.space] == ["x"]
    tuner.search()
    assert {hp.name for hp in tuner.oracle.hyperparameters.space} == {"x", "late"}


def test_r3_allow_new_entries_false_refuses_as_keras_tuner_does(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    _, ep = start_chief(make_search({"type": "random", "max_trials": 2}, objective=OBJECTIVE))
    space = keras_tuner.HyperParameters()
    space.Int("x", 0, 100)
    tuner = _tuner(ScoreTuner, tmp_path, hyperparameters=space, allow_new_entries=False)
    RemoteOracle.attach(tuner, connect(ep), wait_s=1.0)
    assert tuner.oracle.allow_new_entries is False
    assert tuner.oracle.hyperparameters is space  # KT's oracle keeps the user's object
    with pytest.raises(RuntimeError, match="`allow_new_entries` is `False`"):
        tuner.search()  # run_trial registers "late"


@pytest.mark.parametrize(
    ("cls", "oracle"),
    [
        (ScoreTuner, {"type": "random", "max_trials": 3, "seed": 1}),
        # Hyperband's oracle.json has keys of its own (brackets...).
        (ScoreHyperband, {"type": "hyperband", "max_epochs": 2, "factor": 2, "seed": 1}),
    ],
    ids=["random", "hyperband"],
)
def test_r4_a_second_tuner_on_the_same_project_directory_starts(
    cls: Any,
    oracle: dict[str, Any],
    start_chief: StartChief,
    connect: Callable[..., TrialClient],
    tmp_path: Path,
) -> None:
    chief, ep = start_chief(make_search(oracle, objective=OBJECTIVE), long_poll_s=1.0)
    kwargs: dict[str, Any] = {"project_name": "p", "max_trials": 3}
    if cls is ScoreHyperband:
        kwargs = {"project_name": "p", "max_epochs": 2, "factor": 2}
    first = _tuner(cls, tmp_path, **kwargs)
    RemoteOracle.attach(first, connect(ep, "w0"), wait_s=1.0)
    first.search()
    ran = dict(first.oracle.trials)
    assert ran

    # Keras Tuner's default overwrite=False: the constructor reloads the project
    # through the oracle it builds, which needs oracle.json (it raised NotFoundError).
    second = _tuner(cls, tmp_path, **kwargs)
    assert set(second.oracle.trials) == set(ran)  # the trials it found on disk
    RemoteOracle.attach(second, connect(ep, "w1"), wait_s=1.0)
    assert set(second.oracle.trials) == set(ran)
    second.search()  # the search is over: it stops at once
    assert chief.wait(30) is SearchState.COMPLETED


def test_r4_a_recycled_worker_builds_its_tuner_on_the_shared_directory(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    from workers.kt_tuner import ktc_tuner_class

    # A guard more than a regression test: the worker's tuner is built with its
    # RemoteOracle (whose reload is a no-op), so this path reloads without oracle.json.
    search = make_search({"type": "random", "max_trials": 2}, objective=OBJECTIVE)
    _, ep = start_chief(search)
    for worker in ("w0", "w0-recycled"):
        remote = RemoteOracle.for_search(connect(ep, worker), search, wait_s=1.0)
        tuner = ktc_tuner_class()(
            oracle=remote,
            hypermodel=declare_x,
            directory=str(tmp_path),
            project_name="trials",
            overwrite=False,
        )
        tuner.save()  # what on_trial_end does after each trial
        assert tuner.oracle is remote


def test_r5_local_trials_have_the_status_and_score_the_chief_recorded(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    chief, ep = start_chief(make_search({"type": "random", "max_trials": 3}, objective=OBJECTIVE))
    tuner = _tuner(ScoreTuner, tmp_path, max_trials=3)
    RemoteOracle.attach(tuner, connect(ep), wait_s=1.0)
    tuner.search()
    local = tuner.oracle.trials
    assert len(local) == 3
    recorded = {t.trial_id: t for t in chief.broker.trials()}
    for trial_id, trial in local.items():
        assert trial.status == "COMPLETED"
        assert trial.score == float(trial.hyperparameters["x"]) == recorded[trial_id].score
    best_local = max(local.values(), key=lambda t: t.score)
    assert tuner.oracle.get_best_trials(1)[0].trial_id == best_local.trial_id
    assert tuner.get_best_hyperparameters(1)[0]["x"] == best_local.hyperparameters["x"]


def test_r6_a_search_whose_trials_all_fail_raises_keras_tuners_runtime_error(
    start_chief: StartChief, connect: Callable[..., TrialClient], tmp_path: Path
) -> None:
    class Broken(ScoreTuner):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            raise ValueError("run_trial exploded: x must be prime")

    search = make_search(
        {"type": "random", "max_trials": 20},
        objective=OBJECTIVE,
        failure={"max_consecutive_failed_trials": 3, "retries_per_trial": 0},
    )
    chief, ep = start_chief(search, long_poll_s=1.0)
    tuner = _tuner(Broken, tmp_path, max_trials=20)
    RemoteOracle.attach(tuner, connect(ep), wait_s=1.0)
    with pytest.raises(RuntimeError, match="3 consecutive trials failed") as raised:
        tuner.search()
    assert isinstance(raised.value, SearchFailedError)
    assert "x must be prime" in str(raised.value)
    assert chief.wait(10) is SearchState.FAILED
    assert {t.status for t in tuner.oracle.trials.values()} == {"FAILED"}
    assert {t.status for t in chief.broker.trials()} == {TrialStatus.FAILED}

    # A worker runner reports the stop itself: it gets STOPPED, not an exception.
    runner_side = RemoteOracle.for_search(
        connect(ep, "runner"), search, wait_s=1.0, raise_on_failed_search=False
    )
    assert runner_side.create_trial("runner").status == "STOPPED"
    assert runner_side.stop_reason == "the search is failed"


class IdleOnce(keras_tuner.oracles.RandomSearchOracle):  # type: ignore[misc]
    """Answers IDLE to the first create_trial, with no trial running anywhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_answers = 0

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self.idle_answers == 0:
            self.idle_answers += 1
            return {"status": "IDLE", "values": None}
        return super().populate_space(trial_id)  # type: ignore[no-any-return]


def test_r7_an_oracle_that_answers_idle_with_nothing_running_is_asked_again(
    tmp_path: Path,
) -> None:
    # A 30-s long-poll: asked again only on the next trial event (none will
    # come), the search would hang; asked again at once, it ends in seconds.
    hosting = ChiefPerTuner(tmp_path / "chiefs", long_poll_s=30.0, wait_s=30.0)
    try:
        oracle = IdleOnce(objective=_objective(), max_trials=2, seed=1)
        tuner = ScoreOracleTuner(oracle=oracle, hypermodel=declare_x, directory=str(tmp_path))
        hosting.attach(tuner)
        errors: list[BaseException] = []

        def search() -> None:
            try:
                tuner.search()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=search, name="idle-search", daemon=True)
        thread.start()
        thread.join(20.0)
        assert not thread.is_alive(), "the search hangs after the oracle answered IDLE"
        assert not errors, errors
        hosted = hosting.searches[0].chief.broker.oracle_host.oracle  # the chief's copy
        assert hosted.idle_answers == 1
        assert len(tuner.oracle.trials) == 2
    finally:
        hosting.close()
