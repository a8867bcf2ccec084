"""Keras Tuner trial state and hyperparameter configs, parsed and written safely.

Two traps make this module necessary:

- Keras Tuner's ``Trial.from_state`` and ``HyperParameters.from_config``
  rewrite the dict they are given in place: each condition's config becomes a
  ``keras_tuner`` ``Parent`` object. A dict that was parsed once is then no
  longer JSON, and the next ``json.dumps`` of it raises ``TypeError: Object of
  type Parent is not JSON serializable``. Every parse here works on a private
  copy.
- A worker's trial state is hostile input until Keras Tuner itself has parsed
  it. :func:`canonical_hyperparameters` parses a config into Keras Tuner's own
  ``HyperParameters`` and writes it back, so what the chief stores is what
  Keras Tuner would write, or the request is refused before anything changes.

Keras Tuner is imported lazily, so light clients stay light.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InvalidRequestError

if TYPE_CHECKING:
    import keras_tuner
    from keras_tuner.src.engine.trial import Trial


def canonical_json(value: Any) -> str:
    """One JSON text per value: sorted keys, no NaN, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def hyperparameters_from_config(config: dict[str, Any]) -> keras_tuner.HyperParameters:
    """``HyperParameters.from_config`` on a private copy of ``config``."""
    import keras_tuner

    return keras_tuner.HyperParameters.from_config(copy.deepcopy(config))


def trial_from_state(state: dict[str, Any]) -> Trial:
    """``Trial.from_state`` on a private copy of ``state``."""
    from keras_tuner.src.engine import trial as kt_trial

    return kt_trial.Trial.from_state(copy.deepcopy(state))


def hp_config_shape_problem(config: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a ``HyperParameters.get_config()`` dict
    (a 'space' list and a 'values' object), or None. TensorFlow-free: the
    ledger's decoder checks stored configs with it too."""
    if isinstance(config.get("space"), list) and isinstance(config.get("values"), dict):
        return None
    return (
        "expected Keras Tuner's HyperParameters.get_config() with a 'space' list and a "
        f"'values' object, got keys {sorted(map(str, config))[:10]}"
    )


def canonical_hyperparameters(config: Any, *, where: str) -> dict[str, Any]:
    """Parse ``config`` as Keras Tuner's ``HyperParameters.get_config()``; return
    Keras Tuner's own re-serialisation of it (plain JSON types only).

    Raises :class:`InvalidRequestError` naming ``where`` when Keras Tuner cannot
    parse it or the result does not survive a JSON round trip.
    """
    if not isinstance(config, dict):
        raise InvalidRequestError(
            f"{where}: expected Keras Tuner's HyperParameters.get_config() (a JSON object "
            f"with 'space' and 'values'), got {type(config).__name__}"
        )
    problem = hp_config_shape_problem(config)
    if problem is not None:
        raise InvalidRequestError(f"{where}: {problem}")
    try:
        hp = hyperparameters_from_config(config)
        canonical = hp.get_config()
        # Values the build registered but that are not in the space (KT keeps them).
        return json.loads(canonical_json(canonical))  # type: ignore[no-any-return]
    except RecursionError as exc:
        raise InvalidRequestError(f"{where}: nested too deeply") from exc
    except Exception as exc:  # KT raises ValueError, KeyError, TypeError, ... on bad configs
        raise InvalidRequestError(
            f"{where}: Keras Tuner cannot read this hyperparameter config "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def canonical_trial_state(state: Any, *, where: str) -> dict[str, Any]:
    """Parse ``state`` as Keras Tuner's ``Trial.get_state()``; return Keras
    Tuner's own re-serialisation (raises :class:`InvalidRequestError`)."""
    if not isinstance(state, dict):
        raise InvalidRequestError(
            f"{where}: expected Keras Tuner's Trial.get_state() (a JSON object), "
            f"got {type(state).__name__}"
        )
    canonical_hyperparameters(state.get("hyperparameters"), where=f"{where}.hyperparameters")
    try:
        trial = trial_from_state(state)
        return json.loads(canonical_json(trial.get_state()))  # type: ignore[no-any-return]
    except RecursionError as exc:
        raise InvalidRequestError(f"{where}: nested too deeply") from exc
    except Exception as exc:
        raise InvalidRequestError(
            f"{where}: Keras Tuner cannot read this trial state ({type(exc).__name__}: {exc})"
        ) from exc
