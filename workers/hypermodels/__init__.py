"""Hypermodels: the built-ins (cnn, mlp, transfer, sleep) and users' ``module:attr`` code.

Importing this package, :func:`needs_tensorflow` and :func:`validate_overrides`
never import TensorFlow or Keras Tuner (the chief and ``ktc`` validate search
files with them); :func:`resolve_hypermodel` imports them lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.config.user_code import UserCodeError, import_reference
from orchestrator.errors import ConfigError
from workers.hypermodels.catalog import SPACES, TransferOptions
from workers.hypermodels.sleep import SleepOptions, declare_sleep_space
from workers.hypermodels.space import generic_def, resolve_space, suggest

if TYPE_CHECKING:
    import keras_tuner

__all__ = [
    "BUILTIN_HYPERMODELS",
    "BUILTIN_METRICS",
    "HypermodelSpecLike",
    "declare_sleep_space",
    "needs_tensorflow",
    "resolve_hypermodel",
    "validate_overrides",
]

BUILTIN_HYPERMODELS = ("cnn", "mlp", "transfer", "sleep")

# What every built-in logs each epoch: its loss and the one metric its compile
# adds (base.BuiltinHyperModel.compile: metrics=["accuracy"]), on the training
# data and, with the val_ prefix, on the validation data. The sleep benchmark
# returns the same four (sleep.run_sleep_epoch).
BUILTIN_METRICS: tuple[str, ...] = ("loss", "accuracy", "val_loss", "val_accuracy")


class HypermodelSpecLike(Protocol):
    """What this package reads from ``orchestrator.config.HypermodelSpec``."""

    @property
    def name(self) -> str: ...
    @property
    def overrides(self) -> Mapping[str, Any]: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


def _split(spec: HypermodelSpecLike) -> tuple[str, str] | None:
    """``(module, attribute)`` for user code, ``None`` for a built-in name."""
    if ":" not in spec.name:
        if spec.name not in BUILTIN_HYPERMODELS:
            raise ConfigError(
                f"search.yaml: hypermodel.name: unknown built-in hypermodel {spec.name!r}"
                f"{suggest(spec.name, BUILTIN_HYPERMODELS) or '.'} Expected one of "
                f"{', '.join(BUILTIN_HYPERMODELS)}, or 'package.module:attribute' for your own. "
                "Fix the name."
            )
        return None
    module, _, attribute = spec.name.partition(":")
    if not module or not attribute:
        raise ConfigError(
            f"search.yaml: hypermodel.name: {spec.name!r} is not 'package.module:attribute'."
        )
    return module, attribute


def needs_tensorflow(spec: HypermodelSpecLike) -> bool:
    """Whether running this hypermodel needs TF (every one but ``sleep``)."""
    return spec.name != "sleep"


def logged_metrics(spec: HypermodelSpecLike) -> tuple[str, ...] | None:
    """The metric names the hypermodel logs each epoch: :data:`BUILTIN_METRICS`
    for a built-in; None for user code, whose metrics are known once it runs."""
    return BUILTIN_METRICS if _split(spec) is None else None


def validate_overrides(spec: HypermodelSpecLike) -> None:
    """Check ``overrides`` and ``options`` without building a model (no TF import).

    Built-ins: unknown names (with a did-you-mean), wrong override forms,
    ``min > max``, unsupported choices and unknown option keys raise
    :class:`ConfigError`. User hypermodels: only the override forms are checked
    (their space is known only once built), and options are refused.
    """
    if _split(spec) is None:
        resolve_space(SPACES[spec.name], spec.overrides, spec.options)
        if spec.name == "sleep":
            SleepOptions.parse(spec.options)
        elif spec.name == "transfer":
            TransferOptions.parse(spec.options)
        return
    for name, override in spec.overrides.items():
        generic_def(str(name), override)
    if spec.options:
        raise ConfigError(
            f"search.yaml: hypermodel.options: options apply only to the built-in hypermodels "
            f"({', '.join(BUILTIN_HYPERMODELS)}), got {sorted(spec.options)} for {spec.name!r}; "
            "expected no options for your own hypermodel. Read settings in your own code "
            "instead, or remove them."
        )


def resolve_hypermodel(
    spec: HypermodelSpecLike,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    label_mode: str = "int",
) -> keras_tuner.HyperModel:
    """The ``keras_tuner.HyperModel`` the search runs.

    Built-ins are instantiated with the overrides, options and ``label_mode``
    (which picks sparse or one-hot cross-entropy). For ``module:attribute``:
    a ``build_model(hp)`` callable is wrapped the way Keras Tuner's own
    Tuner wraps it, a HyperModel subclass is instantiated with no arguments,
    and a HyperModel instance is used as is. Overrides of a user hypermodel
    are declared before its ``build`` runs, so they take precedence.
    """
    validate_overrides(spec)
    parts = _split(spec)
    if parts is None:
        return _builtin(spec, input_shape, num_classes, label_mode)
    hypermodel = load_user_hypermodel(*parts)
    if spec.overrides:
        return _with_overrides(hypermodel, spec.overrides)
    return hypermodel


def _builtin(
    spec: HypermodelSpecLike, input_shape: tuple[int, ...], num_classes: int, label_mode: str
) -> keras_tuner.HyperModel:
    kwargs: dict[str, Any] = {
        "overrides": dict(spec.overrides),
        "options": dict(spec.options),
        "label_mode": label_mode,
    }
    if spec.name == "cnn":
        from workers.hypermodels.cnn import CNNHyperModel

        return CNNHyperModel(tuple(input_shape), num_classes, **kwargs)
    if spec.name == "mlp":
        from workers.hypermodels.mlp import MLPHyperModel

        return MLPHyperModel(tuple(input_shape), num_classes, **kwargs)
    if spec.name == "transfer":
        from workers.hypermodels.transfer import TransferHyperModel

        return TransferHyperModel(tuple(input_shape), num_classes, **kwargs)
    from workers.hypermodels.sleep import make_sleep_hypermodel

    result: keras_tuner.HyperModel = make_sleep_hypermodel(spec.options, spec.overrides)
    return result


def load_user_hypermodel(module_name: str, attribute: str) -> keras_tuner.HyperModel:
    """Import ``module_name:attribute`` and turn it into a ``keras_tuner.HyperModel``."""
    import keras_tuner

    # Keras Tuner's Tuner turns a build function into a HyperModel with this
    # very helper; using it keeps user code behaving exactly as under KT.
    from keras_tuner.src.engine.hypermodel import get_hypermodel

    reference = f"{module_name}:{attribute}"
    try:
        obj = import_reference(reference)
    except UserCodeError as exc:
        raise ConfigError(f"search.yaml: hypermodel.name: {exc}") from exc
    if isinstance(obj, keras_tuner.HyperModel):
        return obj
    if isinstance(obj, type):
        if not issubclass(obj, keras_tuner.HyperModel):
            raise ConfigError(
                f"search.yaml: hypermodel.name: {reference!r} is the class {obj.__name__}, which is "
                "not a keras_tuner.HyperModel subclass; point at a build_model(hp) function, a "
                "HyperModel subclass or a HyperModel instance."
            )
        try:
            return obj()
        except TypeError as exc:
            raise ConfigError(
                f"search.yaml: hypermodel.name: {reference!r} must be constructible with no "
                f"arguments ({exc}); give its __init__ defaults, or point at an instance."
            ) from exc
    if callable(obj):
        hypermodel: keras_tuner.HyperModel = get_hypermodel(obj)
        return hypermodel
    raise ConfigError(
        f"search.yaml: hypermodel.name: {reference!r} is a {type(obj).__name__} ({obj!r:.60}); "
        "expected a build_model(hp) function, a keras_tuner.HyperModel subclass or instance."
    )


def _with_overrides(
    inner: keras_tuner.HyperModel, overrides: Mapping[str, Any]
) -> keras_tuner.HyperModel:
    """Wrap ``inner`` so the overridden hyperparameters are declared first."""
    import keras_tuner

    from workers.hypermodels.space import declare

    definitions = [generic_def(str(name), value) for name, value in overrides.items()]

    class OverriddenHyperModel(keras_tuner.HyperModel):  # type: ignore[misc]
        """Declares the search's overrides, then delegates to the user's hypermodel."""

        def __init__(self) -> None:
            super().__init__(name=inner.name, tunable=inner.tunable)
            self.inner = inner

        def declare_hyperparameters(self, hp: Any) -> None:
            for definition in definitions:
                declare(hp, definition)
            inner.declare_hyperparameters(hp)

        def build(self, hp: Any) -> Any:
            for definition in definitions:
                declare(hp, definition)
            return inner.build(hp)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            return inner.fit(hp, model, *args, **kwargs)

    return OverriddenHyperModel()
