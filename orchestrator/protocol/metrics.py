"""Keras Tuner objectives and metric directions, shared by the chief and workers.

Both sides register metrics on Keras Tuner trials the same way, so this lives
where workers may import it. Keras Tuner is imported lazily.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras_tuner

    from orchestrator.config import SearchSpec


def build_objective(search: SearchSpec) -> keras_tuner.Objective:
    """The search's objective as Keras Tuner's ``Objective``."""
    import keras_tuner

    return keras_tuner.Objective(search.objective.name, search.objective.resolved_direction)


def register_metrics(trial: Any, objective: Any, names: Any) -> None:
    """Register each new metric name on ``trial`` with the direction Keras Tuner's
    ``update_trial`` would give it, without KT's per-trial inference.

    KT infers a non-objective metric's direction by building the Keras metric
    of that name (``accuracy`` makes a TF variable): about 1 ms per metric per
    trial on the chief, and a minute of resume at 10,000 trials. The answer
    depends on the name only, so it is computed once per name.
    """
    objectives = objective if isinstance(objective, list | tuple) else [objective]
    for name in names:
        if trial.metrics.exists(name):
            continue
        direction = next((o.direction for o in objectives if o.name == name), None)
        trial.metrics.register(name, direction=direction or _inferred_direction(str(name)))


@functools.lru_cache(maxsize=1024)
def _inferred_direction(name: str) -> str:
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

    # KT's MetricsTracker.register: a direction it cannot infer is "min".
    return str(infer_metric_direction(name) or "min")
