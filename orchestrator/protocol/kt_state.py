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
- Keras Tuner parses more than its oracles can use: an ``Int`` with step 0, a
  ``Float`` from -1e308 to 1e308, a value ``"abc"`` for a ``Float``, a
  condition on a parent that does not exist. Stored, each breaks every later
  ``create_trial`` (a Bayesian fit, a random draw), on resume too.
  :func:`check_hyperparameters` refuses them, and names and text that would
  reach the user's terminal with control or format characters in them.

Keras Tuner is imported lazily, so light clients stay light.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.errors import InvalidRequestError
from orchestrator.protocol.names import METRIC_NAME_RULE, is_metric_name, shown_name

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
        check_hyperparameters(hp, where=where)
        canonical = hp.get_config()
        # Values the build registered but that are not in the space (KT keeps them).
        return json.loads(canonical_json(canonical))  # type: ignore[no-any-return]
    except RecursionError as exc:
        raise InvalidRequestError(f"{where}: nested too deeply") from exc
    except InvalidRequestError:
        raise
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


MAX_HP_TEXT_CHARS = 1000
# Integers beyond 2**53 do not survive a float (Keras Tuner's samplers and the
# Bayesian oracle's vectors are floats) nor every JSON reader.
MAX_HP_INT = 2**53


def check_hyperparameters(hp: keras_tuner.HyperParameters, *, where: str) -> None:
    """Refuse a space or values that Keras Tuner parsed but its oracles cannot use.

    - every name: printable (no control or format characters), 1..200 characters
      (the metric-name rule, :func:`~orchestrator.protocol.names.is_metric_name`);
    - ``Int``: integer bounds within +-2**53, a step of at least 1;
    - ``Float``: finite bounds whose span is finite, a finite step above 0;
    - ``Choice`` and ``Fixed``: finite numbers, printable strings;
    - a condition's parent: a hyperparameter of the same space;
    - every value: valid for a hyperparameter of that name (its type, range or
      choices); a value with no hyperparameter in the space (Hyperband's
      ``tuner/*``) must be a plain scalar.

    Raises :class:`InvalidRequestError` naming ``where`` and the hyperparameter.
    """
    by_name: dict[str, list[Any]] = {}
    for item in hp.space:
        _check_name(item.name, where=f"{where}.space")
        by_name.setdefault(item.name, []).append(item)
    for item in hp.space:
        at = f"{where}.space[{item.name!r}]"
        problem = _definition_problem(item)
        if problem is not None:
            raise InvalidRequestError(f"{at}: {problem}")
        for condition in item.conditions:
            parent = getattr(condition, "name", None)
            if parent not in by_name:
                raise InvalidRequestError(
                    f"{at}: its condition names the parent {parent!r}, which is not a "
                    f"hyperparameter of this space ({_names(by_name)})"
                )
            for value in getattr(condition, "values", []):
                _check_scalar(value, where=f"{at}.conditions")
    for name, value in hp.values.items():
        _check_name(name, where=f"{where}.values")
        at = f"{where}.values[{name!r}]"
        _check_scalar(value, where=at)
        problems = [_value_problem(item, value) for item in by_name.get(name, [])]
        if problems and all(problems):
            raise InvalidRequestError(f"{at}: {problems[0]}")


def check_assigned_values(
    values: Mapping[str, Any], assigned: Mapping[str, Any], *, where: str
) -> None:
    """A worker reports back the values the oracle assigned, unchanged (the
    build may add new ones); InvalidRequestError naming the first that differs."""
    for name, want in assigned.items():
        if name in values and not _same_value(values[name], want):
            raise InvalidRequestError(
                f"{where}.values[{name!r}]: the oracle assigned {want!r} to this trial, "
                f"got {values[name]!r}; a worker reports the hyperparameters it was given"
            )


def _same_value(got: Any, want: Any) -> bool:
    """Equal, and of one type (numbers count as one: 2 and 2.0; True is not 1)."""
    return got == want and (type(got) is type(want) or (_is_number(got) and _is_number(want)))


def _names(by_name: Mapping[str, Any]) -> str:
    names = sorted(by_name)
    return ", ".join(map(repr, names[:10])) + (" ..." if len(names) > 10 else "") or "none"


def _check_name(name: Any, *, where: str) -> None:
    # A hyperparameter's name is shown as a metric's is: one rule for both.
    if not is_metric_name(name):
        raise InvalidRequestError(
            f"{where}: a hyperparameter name must be {METRIC_NAME_RULE} (no control or "
            f"format characters), got "
            + (shown_name(name) if isinstance(name, str) else repr(name))
        )


def _check_scalar(value: Any, *, where: str) -> None:
    problem = _scalar_problem(value)
    if problem is not None:
        raise InvalidRequestError(f"{where}: {problem}")


def _scalar_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a value or a choice (None, a bool, a finite
    number or printable text), or None."""
    if value is None or isinstance(value, bool):
        return None
    if _is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if isinstance(value, int) and abs(value) > MAX_HP_INT:
            return f"expected an integer within +-2**53, got {value}"
        return None
    if isinstance(value, str):
        if len(value) > MAX_HP_TEXT_CHARS or not value.isprintable():
            return (
                f"expected printable text (no control or format characters) of at most "
                f"{MAX_HP_TEXT_CHARS} characters, got {value[:60]!r}"
                + ("..." if len(value) > 60 else "")
            )
        return None
    return f"expected an int, float, str, bool or null, got {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _definition_problem(item: Any) -> str | None:
    """What makes this hyperparameter unusable by an oracle, or None."""
    kind = type(item).__name__
    if kind == "Int":
        bounds = (item.min_value, item.max_value)
        if not all(
            _is_number(v) and float(v).is_integer() and abs(v) <= MAX_HP_INT for v in bounds
        ):
            return f"expected integer bounds within +-2**53, got {bounds}"
        if item.step is not None and not (_is_number(item.step) and item.step >= 1):
            return f"expected a step of at least 1 (or none), got {item.step!r}"
    elif kind == "Float":
        bounds = (item.min_value, item.max_value)
        if not all(_is_number(v) and math.isfinite(v) for v in bounds) or not math.isfinite(
            float(item.max_value) - float(item.min_value)
        ):
            return f"expected finite bounds with a finite span, got {bounds}"
        if item.step is not None and not (
            _is_number(item.step) and math.isfinite(item.step) and item.step > 0
        ):
            return f"expected a finite step above 0 (or none), got {item.step!r}"
    elif kind == "Choice":
        for value in item.values:
            problem = _scalar_problem(value)
            if problem is not None:
                return f"a choice: {problem}"
    elif kind == "Fixed":
        return _scalar_problem(item.value)
    if kind in ("Int", "Float", "Choice") and item.default is not None:
        problem = _value_problem(item, item.default)
        if problem is not None:
            return f"its default: {problem}"
    return None


def _value_problem(item: Any, value: Any) -> str | None:
    """Why ``value`` is not a value of ``item``, or None."""
    kind = type(item).__name__
    if kind == "Boolean":
        return None if isinstance(value, bool) else f"expected a bool (Boolean), got {value!r}"
    if kind == "Fixed":
        return (
            None
            if _same_value(value, item.value)
            else (f"expected the Fixed value {item.value!r}, got {value!r}")
        )
    if kind == "Choice":
        return (
            None
            if any(_same_value(value, c) for c in item.values)
            else (f"expected one of the choices {list(item.values)[:10]!r}, got {value!r}")
        )
    if kind in ("Int", "Float"):
        integral = kind == "Int"
        ok_type = _is_number(value) and (not integral or float(value).is_integer())
        if ok_type and math.isfinite(value) and item.min_value <= value <= item.max_value:
            return None
        return (
            f"expected {'an integer' if integral else 'a number'} in "
            f"[{item.min_value}, {item.max_value}] ({kind}), got {value!r}"
        )
    return None  # a hyperparameter type this check does not know: Keras Tuner's parse stands
