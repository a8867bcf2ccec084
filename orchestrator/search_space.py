"""A search's space, as Keras Tuner declares it, and the size of a grid over it.

- :func:`space_from_search`: the space Keras Tuner itself declares for a search
  file's hypermodel. A stock ``keras_tuner`` Tuner is made around the
  hypermodel (in a temporary folder, with a local oracle), which declares the
  space and builds the model until every conditional scope was active once:
  the very code a worker's Tuner runs. User code imports from the current
  directory, as for ``ktc submit``.
- :func:`space_from_search_dir`: the space the chief recorded in a search
  directory's ledger (opened read-only), as the search really ran it.
- :func:`grid_size`: the points Keras Tuner's GridSearch visits.

``ktc space`` prints them and ``ktc validate`` notes a grid's size.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    import keras_tuner

    from orchestrator.config import SearchSpec

# Input shapes of the built-in datasets: the built-in hypermodels need one to
# build, and their spaces do not depend on it.
_BUILTIN_SHAPES: dict[str, tuple[int, ...]] = {
    "digits": (8, 8, 1),
    "mnist": (28, 28),
    "fashion_mnist": (28, 28),
    "cifar10": (32, 32, 3),
}
_FALLBACK_SHAPE = (32, 32, 3)
# Past this many combinations of conditional parents the grid is not counted.
_MAX_PARENT_COMBINATIONS = 100_000
# keras_tuner's Float.values without a step: 10 evenly spaced samples.
KT_FLOAT_GRID_SAMPLES = 10


# A stepped Float lists its grid in the table while it has at most this many points.
_LISTED_FLOAT_POINTS = 12
# --json lists a stepped range's values up to this many (else "values" is null).
_MAX_LISTED_VALUES = 1000


@dataclass(frozen=True)
class HpRow:
    """One hyperparameter of a space: structured for ``--json``, with the
    ``values`` text the table prints."""

    name: str
    type: str  # Int, Float, Choice, Boolean, Fixed
    values: str  # the range or the values, as the table prints them
    step: Any
    sampling: str | None
    default: Any
    conditions: tuple[tuple[str, tuple[Any, ...]], ...]  # (parent, values), all must hold
    minimum: Any = None  # Int, Float
    maximum: Any = None  # Int, Float (as declared: a stepped Float may never reach it)
    # Every value it can take (Choice, Boolean, Fixed, and a stepped Int or
    # Float, as Keras Tuner's own ``values`` gives them); None for a Float without step.
    choices: tuple[Any, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as JSON data: numbers and lists, never display strings."""
        return {
            "name": self.name,
            "type": self.type,
            "min": self.minimum,
            "max": self.maximum,
            "step": self.step,
            "sampling": self.sampling,
            "values": None if self.choices is None else list(self.choices),
            "default": self.default,
            "conditions": [{"parent": p, "values": list(v)} for p, v in self.conditions],
        }


def space_from_search(spec: SearchSpec) -> keras_tuner.HyperParameters:
    """The space Keras Tuner declares for ``spec``'s hypermodel (imports TensorFlow)."""
    import keras_tuner

    from orchestrator.config.user_code import user_code_path
    from workers.hypermodels import needs_tensorflow, resolve_hypermodel
    from workers.hypermodels.sleep import declare_sleep_space

    hp = keras_tuner.HyperParameters()
    hypermodel_spec = spec.hypermodel
    if not needs_tensorflow(hypermodel_spec):
        declare_sleep_space(hp, hypermodel_spec.options, hypermodel_spec.overrides)
        return hp
    if hypermodel_spec.name == "transfer":
        # The space does not depend on the backbone's weights; don't load them.
        options = {**hypermodel_spec.options, "weights": None}
        hypermodel_spec = hypermodel_spec.model_copy(update={"options": options})
    dataset = spec.dataset
    shape = _BUILTIN_SHAPES.get(dataset.source, _FALLBACK_SHAPE) if dataset else _FALLBACK_SHAPE
    if dataset is not None and dataset.image_size is not None:
        shape = (*dataset.image_size, 1 if dataset.color_mode == "grayscale" else 3)
    label_mode = "onehot" if dataset is not None and dataset.labels == "one_hot" else "int"
    with user_code_path([os.getcwd()]), tempfile.TemporaryDirectory(prefix="ktc-space-") as tmp:
        hypermodel = resolve_hypermodel(hypermodel_spec, shape, 10, label_mode=label_mode)
        try:
            # A stock Tuner declares the space exactly as a worker's does
            # (declare_hyperparameters, then builds until every conditional
            # scope was active once).
            tuner = keras_tuner.RandomSearch(
                hypermodel,
                objective="val_loss",
                max_trials=1,
                directory=tmp,
                project_name="space",
                overwrite=True,
            )
        except Exception as exc:  # the user's build raised: say so against the file
            raise ConfigError(
                f"hypermodel.name: building {spec.hypermodel.name!r} to read its space raised "
                f"{type(exc).__name__}: {exc}; expected a hypermodel that builds with its default "
                "hyperparameter values. Fix the hypermodel."
            ) from exc
        space: keras_tuner.HyperParameters = tuner.oracle.get_space()
        return space


def space_from_search_dir(search_dir: Path) -> keras_tuner.HyperParameters:
    """The space recorded in the ledger of ``search_dir`` (read-only)."""
    from orchestrator.chief.ledger import Ledger
    from orchestrator.chief.replay import replay
    from orchestrator.protocol.kt_state import hyperparameters_from_config
    from orchestrator.search_dir import LEDGER_FILE, require_search_dir

    path = require_search_dir(search_dir)
    with Ledger(path / LEDGER_FILE, read_only=True) as ledger:
        config = replay(ledger).space_config
    if config is None:
        raise ConfigError(
            f"{path}: the ledger holds no search space yet (no worker has built the model); "
            "expected a search that has started. Run `ktc space` on its search file instead."
        )
    return hyperparameters_from_config(config)


def rows(hp: keras_tuner.HyperParameters) -> list[HpRow]:
    """The space's hyperparameters, in declaration order."""
    out = []
    for param in hp.space:
        config = param.get_config()
        kind = type(param).__name__
        minimum = maximum = step = sampling = None
        choices: tuple[Any, ...] | None
        if kind in ("Int", "Float"):
            minimum, maximum = config["min_value"], config["max_value"]
            step, sampling = config.get("step"), config.get("sampling")
            values = f"{minimum} .. {maximum}"
            choices = None
            if not (kind == "Float" and step is None):
                grid = tuple(itertools.islice(param.values, _MAX_LISTED_VALUES + 1))
                choices = grid if len(grid) <= _MAX_LISTED_VALUES else None
            if kind == "Float" and choices is not None:
                # Keras Tuner's rounding may stop short of max (0.0 .. 0.3 step 0.1
                # is 0.0, 0.1, 0.2): list the grid it really samples.
                choices = tuple(float(f"{v:.12g}") for v in choices)
                if len(choices) <= _LISTED_FLOAT_POINTS:
                    values = ", ".join(str(v) for v in choices)
        elif kind == "Choice":
            choices = tuple(config["values"])
            values = ", ".join(map(str, choices))
        elif kind == "Boolean":
            choices = (True, False)
            values = "True, False"
        else:
            choices = (config.get("value"),)
            values = str(config.get("value"))
        out.append(
            HpRow(
                name=param.name,
                type=kind,
                values=values,
                step=step,
                sampling=sampling,
                default=param.default,
                conditions=tuple((c.name, tuple(c.values)) for c in param.conditions),
                minimum=minimum,
                maximum=maximum,
                choices=choices,
            )
        )
    return out


def floats_without_step(hp: keras_tuner.HyperParameters) -> list[str]:
    """Names of the Float hyperparameters with no step (not a finite grid)."""
    return [p.name for p in hp.space if type(p).__name__ == "Float" and p.step is None]


def _grid_values(param: Any) -> list[Any]:
    # keras_tuner GridSearchOracle._get_next_combination: the default first,
    # then the other values.
    values = list(param.values)
    if param.default in values:
        values.remove(param.default)
    return [param.default, *values]


def grid_size(hp: keras_tuner.HyperParameters) -> int | None:
    """The number of points Keras Tuner's GridSearch visits for ``hp``.

    Each hyperparameter counts its values (a Float without a step: the 10
    samples Keras Tuner takes), and a conditional one only where its
    conditions hold. None when the conditional parents have too many
    combinations to count.
    """
    space = list(hp.space)
    parent_names = {c.name for p in space for c in p.conditions}
    parents = [p for p in space if p.name in parent_names]
    others = [p for p in space if p.name not in parent_names]
    choices = [_grid_values(p) for p in parents]
    if math.prod(len(c) for c in choices) > _MAX_PARENT_COMBINATIONS:
        return None

    def active(param: Any, values: dict[str, Any]) -> bool:
        return all(c.name in values and values[c.name] in c.values for c in param.conditions)

    seen: set[tuple[tuple[str, Any], ...]] = set()
    total = 0
    for combination in itertools.product(*choices):
        values: dict[str, Any] = {}
        for param, value in zip(parents, combination, strict=True):
            if active(param, values):
                values[param.name] = value
        key = tuple(sorted(values.items()))
        if key in seen:  # an inactive parent repeats its siblings' points
            continue
        seen.add(key)
        total += math.prod(len(_grid_values(p)) for p in others if active(p, values))
    return total


def grid_note(hp: keras_tuner.HyperParameters) -> str:
    """What a grid over ``hp`` means: its size, and the Floats that make it arbitrary."""
    size = grid_size(hp)
    text = (
        f"a grid over this space has {size} points"
        if size is not None
        else "a grid over this space has too many points to count"
    )
    loose = floats_without_step(hp)
    if loose:
        text += (
            f" (Float {', '.join(loose)} without a step: Keras Tuner's GridSearch takes "
            f"{KT_FLOAT_GRID_SAMPLES} evenly spaced values of each)"
        )
    return text
