"""Build the chief's Keras Tuner oracle from a :class:`SearchSpec`.

Workers never build one: they build a ``RemoteOracle`` from the same spec
(:meth:`orchestrator.protocol.oracle_client.RemoteOracle.for_search`). Keras
Tuner is imported lazily so modules that only need types don't pay for
TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.protocol.metrics import build_objective

if TYPE_CHECKING:
    import keras_tuner

    from orchestrator.config import SearchSpec

# The chief owns retries and the consecutive-failure limit itself (leases,
# tracebacks, a clean FAILED state), so Keras Tuner's own are turned off: its
# limit raises inside end_trial and hangs its chief (KT-RAY-NOTES.md).
_NO_LIMIT = 10**9


def build_oracle(
    search: SearchSpec, hyperparameters: Any = None, *, offload_gp: bool = False
) -> keras_tuner.Oracle:
    """A fresh oracle of the spec's type, with KT's own retry and failure limits off.

    ``offload_gp`` (the chief's oracle) runs a Bayesian oracle's GP step in a
    helper process (:mod:`orchestrator.chief.bayesian`); close it with :func:`close_oracle`.
    """
    import keras_tuner

    spec = search.oracle
    common: dict[str, Any] = {
        "objective": build_objective(search),
        "seed": spec.seed,
        "hyperparameters": hyperparameters,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": _NO_LIMIT,
    }
    oracle: keras_tuner.Oracle
    if spec.type == "random":
        oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=spec.max_trials, **common)
    elif spec.type == "grid":
        oracle = keras_tuner.oracles.GridSearchOracle(max_trials=spec.max_trials, **common)
    elif spec.type == "bayesian":
        if offload_gp:
            from orchestrator.chief.bayesian import OffloadedBayesianOracle

            bayesian_class: type[keras_tuner.Oracle] = OffloadedBayesianOracle
        else:
            bayesian_class = keras_tuner.oracles.BayesianOptimizationOracle
        oracle = bayesian_class(
            max_trials=spec.max_trials,
            num_initial_points=spec.num_initial_points,
            alpha=spec.alpha,
            beta=spec.beta,
            **common,
        )
    elif spec.type == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=spec.max_epochs,
            factor=spec.factor,
            hyperband_iterations=spec.hyperband_iterations,
            **common,
        )
        # KT's Hyperband has no max_trials of its own; the base create_trial
        # honours the attribute, so a user's cap still applies.
        oracle.max_trials = spec.max_trials
    else:  # pragma: no cover - the config literal rules this out
        raise ValueError(f"unknown oracle type {spec.type!r}")
    oracle._display.verbose = 0
    return oracle


def close_oracle(oracle: Any) -> None:
    """Release what :func:`build_oracle` started for this oracle (a GP helper process)."""
    close = getattr(oracle, "close", None)
    if callable(close):
        close()
