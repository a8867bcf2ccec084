"""The chief's Bayesian oracle runs its GP step in a helper process.

The reference is Keras Tuner's own ``BayesianOptimizationOracle``: fed the
same results, the offloaded oracle must propose the same values, trial by
trial, whether the child answers, dies, or cannot be used at all.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.chief.bayesian import OffloadedBayesianOracle
from orchestrator.chief.gp_process import GpProcess

SEED = 7
INITIAL_POINTS = 3


def _space() -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 16, 256, step=16)
    hp.Choice("act", ["relu", "tanh"])
    return hp


def _score(values: dict[str, Any]) -> float:
    """A deterministic objective with an interior optimum."""
    return 1.0 - (values["units"] - 128) ** 2 / 1e5 - abs(values["lr"] - 0.01) * 3


def _oracle(cls: Callable[..., Any], **kwargs: Any) -> Any:
    import keras_tuner

    oracle = cls(
        objective=keras_tuner.Objective("score", "max"),
        max_trials=100,
        num_initial_points=INITIAL_POINTS,
        seed=SEED,
        hyperparameters=_space(),
        **kwargs,
    )
    oracle._display.verbose = 0
    oracle.save = lambda *a, **k: None
    oracle._save_trial = lambda *a, **k: None
    return oracle


def _run(oracle: Any, trials: int, between: Callable[[int], None] = lambda i: None) -> list[dict]:
    """Sequential create/end, two trials in flight so the GP hallucinates one."""
    proposed: list[dict[str, Any]] = []
    running: list[Any] = []
    for i in range(trials):
        between(i)
        trial = oracle.create_trial(f"tuner{i % 2}")
        assert trial.status == "RUNNING", trial.status
        proposed.append(dict(trial.hyperparameters.values))
        running.append(trial)
        if len(running) == 2:
            done = running.pop(0)
            oracle.update_trial(done.trial_id, {"score": _score(done.hyperparameters.values)})
            done.status = "COMPLETED"
            oracle.end_trial(done)
    return proposed


@pytest.fixture(scope="module")
def stock_proposals() -> list[dict[str, Any]]:
    import keras_tuner

    return _run(_oracle(keras_tuner.oracles.BayesianOptimizationOracle), 9)


def test_offloaded_oracle_proposes_what_keras_tuner_proposes(stock_proposals: list[dict]) -> None:
    oracle = _oracle(OffloadedBayesianOracle)
    try:
        assert _run(oracle, 9) == stock_proposals
        assert oracle.gp_process.calls >= 9 - INITIAL_POINTS - 2  # GP steps ran in the child
        assert oracle.gp_fallbacks == 0
    finally:
        oracle.close()


def test_a_killed_helper_is_replaced_and_proposals_do_not_change(
    stock_proposals: list[dict],
) -> None:
    oracle = _oracle(OffloadedBayesianOracle)
    pids: list[int] = []

    def kill_helper(i: int) -> None:
        # Kill the child before each GP step from the sixth trial on.
        pid = oracle.gp_process.pid
        if i >= 6 and pid is not None:
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
            proc = oracle.gp_process._proc
            assert proc is not None
            proc.wait(timeout=10)  # dead before the step: the next call starts a new child

    try:
        assert _run(oracle, 9, kill_helper) == stock_proposals
        assert len(pids) == 3 and len(set(pids)) == 3  # a fresh child each time
        assert oracle.gp_fallbacks == 0
    finally:
        oracle.close()


def test_without_a_usable_helper_the_step_runs_inline(stock_proposals: list[dict]) -> None:
    helper = GpProcess()
    helper.close()  # closed before use: every call raises GpProcessError
    oracle = _oracle(OffloadedBayesianOracle, gp_process=helper)
    assert _run(oracle, 9) == stock_proposals
    assert oracle.gp_fallbacks >= 9 - INITIAL_POINTS - 2
    assert helper.calls == 0


def test_close_ends_the_helper_process() -> None:
    helper = GpProcess()
    helper.start()
    pid = helper.pid
    assert pid is not None
    proc = helper._proc
    helper.close()
    assert proc is not None and proc.returncode is not None  # reaped, by us
    assert helper.pid is None


class _ExitOnLoad:
    """Unpickling this in the child ends the child mid-request."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (os._exit, (3,))


def test_a_child_that_dies_mid_request_raises_and_the_next_call_gets_a_new_child() -> None:
    import numpy as np
    import sklearn.gaussian_process

    from orchestrator.chief.gp_process import GpProcessError, GpRequest

    rng = np.random.RandomState(0)
    good = GpRequest(
        gpr=sklearn.gaussian_process.GaussianProcessRegressor(random_state=0),
        x=rng.uniform(size=(6, 2)),
        y=rng.uniform(size=6),
        x_seeds=rng.uniform(size=(3, 2)),
        bounds=np.array([[0.0, 1.0], [0.0, 1.0]]),
        beta=2.6,
    )
    helper = GpProcess()
    try:
        first = helper.propose(good)
        with pytest.raises(GpProcessError, match="stopped answering"):
            helper.propose(GpRequest(_ExitOnLoad(), good.x, good.y, good.x_seeds, good.bounds, 2.6))
        assert helper.pid is None  # the dead child was reaped
        again = helper.propose(good)
        np.testing.assert_array_equal(first.optimal_x, again.optimal_x)
        assert helper.calls == 2
    finally:
        helper.close()
