"""Keras Tuner's Bayesian oracle, with its GP step run by :mod:`orchestrator.chief.gp_process`.

The chief builds this class instead of KT's own (workers never decide, so
they keep the stock one). Only ``populate_space`` changes, and only where it
fits the GP: the initial random points, the generator that draws the
restart seeds, the hallucinated scores of running trials and the mapping back
to values all stay in this process and in KT's code. So the proposals, and
the ``bayes_rng`` snapshot a resume restores, are those of the stock oracle
(``tests/unit/test_bayesian_offload.py`` checks that, trial by trial).

Written against keras-tuner 1.4.8 (``keras_tuner/src/tuners/bayesian.py``);
the pyproject pins the 1.4 line.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import sklearn.base
from keras_tuner.oracles import BayesianOptimizationOracle
from keras_tuner.src.engine import trial as trial_module

from orchestrator.chief.gp_process import (
    NUM_RESTARTS,
    GpProcess,
    GpProcessError,
    GpRequest,
    propose,
)

log = logging.getLogger(__name__)


class OffloadedBayesianOracle(BayesianOptimizationOracle):  # type: ignore[misc]
    """``BayesianOptimizationOracle`` whose GP fit and acquisition search run in a child."""

    gpr: Any  # KT's sklearn GaussianProcessRegressor

    def __init__(self, *args: Any, gp_process: GpProcess | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gp_process = gp_process if gp_process is not None else GpProcess()
        self.gp_fallbacks = 0  # GP steps computed inline because the child failed

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        completed = sum(1 for t in self.trials.values() if t.status == "COMPLETED")
        dimensions = len(self.hyperparameters.space)
        num_initial_points = self.num_initial_points or max(3 * dimensions, 3)
        if completed < num_initial_points:
            # Let the child import while the random initial points run.
            self._start_gp_process()
            return self._random_populate_space()  # type: ignore[no-any-return]

        x, y = self._vectorize_trials()  # hallucinates running trials with the last fit
        x = np.nan_to_num(x, posinf=0, neginf=0)
        y = np.nan_to_num(y, posinf=0, neginf=0)
        bounds = self._get_hp_bounds()
        x_seeds = self._random_state.uniform(
            bounds[:, 0], bounds[:, 1], size=(NUM_RESTARTS, bounds.shape[0])
        )
        # An unfitted copy: fit() starts from the kernel's initial parameters
        # anyway, and a fitted one carries an n x n Cholesky factor.
        unfitted = sklearn.base.clone(self.gpr)
        request = GpRequest(gpr=unfitted, x=x, y=y, x_seeds=x_seeds, bounds=bounds, beta=self.beta)
        try:
            answer = self.gp_process.propose(request)
        except GpProcessError as exc:
            self.gp_fallbacks += 1
            log.warning("%s; fitting the GP in the chief's process instead", exc)
            answer = propose(request)
        self.gpr = answer.gpr
        values = self._vector_to_values(answer.optimal_x)
        return {"status": trial_module.TrialStatus.RUNNING, "values": values}

    def _start_gp_process(self) -> None:
        try:
            self.gp_process.start()
        except (OSError, GpProcessError) as exc:
            log.warning("could not start the GP helper process: %s", exc)

    def close(self) -> None:
        self.gp_process.close()
