"""Stock Keras Tuner tuners run their trials against a real chief through
RemoteOracle: RandomSearch, Hyperband (continuation trials included) and a
build function that always raises (the consecutive-failure limit)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import final_counts, make_search

keras = pytest.importorskip("keras")
keras_tuner = pytest.importorskip("keras_tuner")
np = pytest.importorskip("numpy")

from orchestrator.protocol.oracle_client import RemoteOracle  # noqa: E402  (imports keras_tuner)

StartChief = Callable[..., tuple[Chief, Any]]
OBJECTIVE = {"name": "val_accuracy", "direction": "max"}


def _data() -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    return x, y


def build_model(hp: Any) -> Any:
    # Named layers: these tests run two tuners in threads of one process, and
    # Keras's automatic layer names are not thread-safe (two threads can both
    # get "dense", and Sequential then refuses the duplicate).
    model = keras.Sequential(
        [
            keras.layers.Input((4,)),
            keras.layers.Dense(hp.Int("units", 4, 16, step=4), activation="relu", name="hidden"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _two_tuners(cls: Any, build: Any, work: Path, max_trials: int) -> list[Any]:
    """Two tuners of ``cls``, each with its own project directory."""
    return [
        cls(
            build,
            objective="val_accuracy",
            max_trials=max_trials,
            directory=str(work),
            project_name=f"p{i}",
            overwrite=True,
        )
        for i in range(2)
    ]


def _run_tuners(
    tuners: list[Any], ep: Any, epochs: int | None = None
) -> tuple[list[threading.Thread], list[BaseException]]:
    """Attach each tuner to the chief and run its search in a thread."""
    x, y = _data()
    errors: list[BaseException] = []

    def work(i: int, tuner: Any) -> None:
        try:
            client = TrialClient(ep.address, ep.token, worker_id=f"w{i}")
            RemoteOracle.attach(tuner, client, wait_s=1.0)
            kwargs = {"epochs": epochs} if epochs else {}
            tuner.search(x, y, validation_data=(x, y), verbose=0, **kwargs)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(i, t), name=f"tuner-{i}", daemon=True)
        for i, t in enumerate(tuners)
    ]
    for t in threads:
        t.start()
    return threads, errors


def _join(running: tuple[list[threading.Thread], list[BaseException]], timeout_s: float) -> None:
    threads, errors = running
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a tuner thread hangs"
    assert not errors, errors


def _assert_all_completed_once(search_dir: Path, expected: int | None = None) -> Any:
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger)
    statuses = {tid: r.status for tid, r in replayed.records.items()}
    assert set(statuses.values()) == {TrialStatus.COMPLETED}, statuses
    finals = final_counts(search_dir / "ledger.db")
    assert set(finals.values()) == {1}
    assert {tid for tid, _ in finals} == set(statuses)
    if expected is not None:
        assert len(statuses) == expected
    return replayed


def test_stock_random_search_through_remote_oracle(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    search = make_search({"type": "random", "max_trials": 4, "seed": 1}, objective=OBJECTIVE)
    chief, ep = start_chief(search, long_poll_s=1.0)
    tuners = _two_tuners(keras_tuner.RandomSearch, build_model, tmp_path / "work", max_trials=4)
    threads = _run_tuners(tuners, ep, epochs=2)
    assert chief.wait(120) is SearchState.COMPLETED
    _join(threads, 30)
    replayed = _assert_all_completed_once(search_dir, expected=4)
    assert {r.worker_id for r in replayed.records.values()} <= {"w0", "w1"}
    assert all(r.score is not None for r in replayed.records.values())
    best = tuners[0].oracle.get_best_trials(1)[0]
    assert best.score == max(r.score for r in replayed.records.values())


def test_stock_hyperband_runs_continuation_trials(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    search = make_search(
        {"type": "hyperband", "seed": 1, "max_epochs": 3, "factor": 3}, objective=OBJECTIVE
    )
    chief, ep = start_chief(search, long_poll_s=1.0)
    # One shared project directory: a continuation loads its parent's checkpoint.
    tuners = [
        keras_tuner.Hyperband(
            build_model,
            objective="val_accuracy",
            max_epochs=3,
            factor=3,
            directory=str(tmp_path / "work"),
            project_name="shared",
            overwrite=False,
        )
        for _ in range(2)
    ]
    threads = _run_tuners(tuners, ep)
    assert chief.wait(180) is SearchState.COMPLETED
    _join(threads, 30)
    replayed = _assert_all_completed_once(search_dir)
    continuations = [
        r for r in replayed.records.values() if r.values.get("tuner/trial_id") is not None
    ]
    assert continuations, "no Hyperband continuation trial ran"
    for cont in continuations:
        parent = replayed.records[cont.values["tuner/trial_id"]]
        assert parent.status is TrialStatus.COMPLETED
        assert cont.values["tuner/initial_epoch"] > 0


def test_failing_build_function_ends_the_search_failed(
    start_chief: StartChief, tmp_path: Path
) -> None:
    armed = threading.Event()  # the tuners' constructors build once to find the space

    def broken_build(hp: Any) -> Any:
        model = build_model(hp)
        if armed.is_set():
            raise ValueError("build_model exploded: units must be prime")
        return model

    search = make_search(
        {"type": "random", "max_trials": 20, "seed": 1},
        objective=OBJECTIVE,
        failure={"max_consecutive_failed_trials": 3, "retries_per_trial": 0},
    )
    chief, ep = start_chief(search, long_poll_s=1.0)
    tuners = _two_tuners(keras_tuner.RandomSearch, broken_build, tmp_path / "work", max_trials=20)
    armed.set()
    threads = _run_tuners(tuners, ep, epochs=1)
    assert chief.wait(60) is SearchState.FAILED
    assert "consecutive trials failed (limit 3)" in chief.broker.message
    assert "build_model exploded: units must be prime" in chief.broker.message
    # The tuners got STOP and, as Keras Tuner's own limit does, search() raised.
    running, errors = threads
    for thread in running:
        thread.join(30)
    assert not any(thread.is_alive() for thread in running), "a tuner thread hangs"
    assert len(errors) == len(tuners)
    for error in errors:
        assert isinstance(error, RuntimeError)
        assert "consecutive trials failed (limit 3)" in str(error)
    failed = [t for t in chief.broker.trials() if t.status is TrialStatus.FAILED]
    assert len(failed) >= 3
    assert all("units must be prime" in (t.traceback_tail or "") for t in failed)
    stop_reasons = {t.oracle.stop_reason for t in tuners}
    assert stop_reasons == {"the search is failed"}


def test_stock_bayesian_search_runs_its_gp_steps_in_the_chiefs_helper(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    search = make_search(
        {"type": "bayesian", "max_trials": 6, "num_initial_points": 2, "seed": 1},
        objective=OBJECTIVE,
    )
    chief, ep = start_chief(search, long_poll_s=1.0)
    tuners = _two_tuners(
        keras_tuner.BayesianOptimization, build_model, tmp_path / "work", max_trials=6
    )
    threads = _run_tuners(tuners, ep, epochs=1)
    assert chief.wait(180) is SearchState.COMPLETED
    _join(threads, 30)
    _assert_all_completed_once(search_dir, expected=6)
    oracle = chief.broker.oracle_host.oracle
    helper = oracle.gp_process
    assert helper.calls >= 1 and oracle.gp_fallbacks == 0  # the GP steps ran in the child
    child = helper._proc
    chief.close()
    assert child is not None and child.returncode is not None  # and it ended with the chief
