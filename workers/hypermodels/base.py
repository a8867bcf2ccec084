"""Shared machinery of the Keras built-in hypermodels (cnn, mlp, transfer).

Imports keras and keras_tuner: only import this module where TF is wanted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import keras_tuner

from orchestrator.errors import ConfigError
from workers.hypermodels.space import HpDef, SpaceSpec, declare, resolve_space

LABEL_MODES = ("int", "onehot")


def loss_for(label_mode: str) -> str:
    """The cross-entropy loss matching integer or one-hot labels."""
    if label_mode == "int":
        return "sparse_categorical_crossentropy"
    if label_mode == "onehot":
        return "categorical_crossentropy"
    raise ConfigError(f"label_mode: expected one of {', '.join(LABEL_MODES)}, got {label_mode!r}.")


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by its lower-case name (``adam``, ``sgd``, ``rmsprop``, ...)."""
    classes: dict[str, type[keras.optimizers.Optimizer]] = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adamw": keras.optimizers.AdamW,
        "nadam": keras.optimizers.Nadam,
        "adagrad": keras.optimizers.Adagrad,
    }
    if name not in classes:
        raise ConfigError(
            f"hypermodel: unknown optimizer {name!r}; supported: {', '.join(classes)}."
        )
    return classes[name](learning_rate=learning_rate)


class BuiltinHyperModel(keras_tuner.HyperModel):
    """A Keras Tuner HyperModel whose space comes from a :class:`SpaceSpec`.

    Subclasses set ``SPACE`` and implement ``build(hp)`` using :meth:`value`
    to declare each hyperparameter with its (possibly overridden) range.
    ``fit`` tunes ``batch_size`` only when the search overrides it.
    """

    SPACE: SpaceSpec

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        overrides: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        label_mode: str = "int",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or self.SPACE.hypermodel)
        if num_classes < 2:
            raise ConfigError(
                f"hypermodel {self.SPACE.hypermodel!r}: needs at least 2 classes, got {num_classes}."
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.options: dict[str, Any] = dict(options or {})
        self.label_mode = label_mode
        self.loss = loss_for(label_mode)
        self.defs: dict[str, HpDef] = resolve_space(self.SPACE, overrides or {}, self.options)

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare the hyperparameters used outside ``build`` (``batch_size``, when tuned)."""
        if "batch_size" in self.defs:
            self.value(hp, "batch_size")

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Declare the space on ``hp`` and return a compiled model for its values."""
        self.declare_hyperparameters(hp)
        return self.build_model(hp)

    def build_model(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build and compile the model (subclasses implement)."""
        raise NotImplementedError

    def value(self, hp: keras_tuner.HyperParameters, name: str, index: int | None = None) -> Any:
        """Declare hyperparameter ``name`` (``name_{index}`` for per-block ones) on ``hp``."""
        definition = self.defs[name]
        hp_name = f"{name}_{index}" if index is not None else None
        return declare(hp, definition, hp_name)

    def compile(self, model: keras.Model, hp: keras_tuner.HyperParameters, optimizer: str) -> None:
        """Compile ``model`` with the tuned learning rate, the right loss and accuracy."""
        learning_rate = float(self.value(hp, "learning_rate"))
        model.compile(
            optimizer=make_optimizer(optimizer, learning_rate),
            loss=self.loss,
            metrics=["accuracy"],
        )

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        """``model.fit``, with ``batch_size`` tuned when the search overrides it."""
        if "batch_size" in self.defs:
            kwargs["batch_size"] = int(self.value(hp, "batch_size"))
        return model.fit(*args, **kwargs)
