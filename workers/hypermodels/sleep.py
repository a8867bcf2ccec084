"""``sleep``: a model-free benchmark and test hypermodel. Never imports TensorFlow.

Each epoch sleeps ``options.epoch_s`` seconds (default 0.5) and returns metrics
that are a deterministic function of the hyperparameters and the epoch: a
smooth bowl with its best at ``x=0.3, y=0.7`` (small bonuses for ``units``
near 128 and ``optimizer: adam``) that improves with every epoch. It measures
the orchestration overhead (benchmarks) and makes trials fail on demand (fault
tests):

- ``fail_rate`` (0..1): an attempt raises :class:`InjectedTrialFailure` at its
  first epoch when ``hash(values, attempt)`` falls under the rate: the same
  trial and attempt always behave the same, and a retry (attempt + 1) draws
  again.
- ``fail_on``: a list of mappings; a trial whose values contain all the items
  of one of them always raises.

The chief declares the space with :func:`declare_sleep_space` on a Keras Tuner
``HyperParameters``; workers run :func:`run_sleep_epoch` per epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config.errors_format import number_hint
from orchestrator.config.limits import MAX_SLEEP_EPOCH_S
from orchestrator.errors import ConfigError
from workers.hypermodels.catalog import SLEEP_SPACE
from workers.hypermodels.space import declare, resolve_space

_OPTIMIZER_BONUS = {"adam": 0.0, "rmsprop": -0.01, "sgd": -0.03}


class InjectedTrialFailure(RuntimeError):
    """The failure the sleep hypermodel raises on purpose (``fail_rate``/``fail_on``).

    A plain ``RuntimeError``, like an error in user model code, not a
    ``KtClusterError``: the runner must report the trial FAILED and go on.
    """


@dataclass(frozen=True)
class SleepOptions:
    """Validated ``hypermodel.options`` of the sleep hypermodel."""

    epoch_s: float = 0.5
    fail_rate: float = 0.0
    fail_on: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> SleepOptions:
        """Validate the raw options mapping (unknown keys and bad values raise ConfigError)."""
        resolve_space(SLEEP_SPACE, {}, options)
        where = "search.yaml: hypermodel.options"
        epoch_s = options.get("epoch_s", 0.5)
        if (
            not isinstance(epoch_s, int | float)
            or isinstance(epoch_s, bool)
            or not 0 <= epoch_s <= MAX_SLEEP_EPOCH_S
        ):
            raise ConfigError(
                f"{where}.epoch_s: expected a number >= 0 and <= {MAX_SLEEP_EPOCH_S:g} (a day), "
                f"got {epoch_s!r}{number_hint(epoch_s)}. Fix the value."
            )
        fail_rate = options.get("fail_rate", 0.0)
        if (
            not isinstance(fail_rate, int | float)
            or isinstance(fail_rate, bool)
            or not 0 <= fail_rate <= 1
        ):
            raise ConfigError(
                f"{where}.fail_rate: expected a number in [0, 1], got {fail_rate!r}"
                f"{number_hint(fail_rate)}. Fix the value."
            )
        fail_on = options.get("fail_on", [])
        if not isinstance(fail_on, list | tuple) or not all(
            isinstance(item, Mapping) for item in fail_on
        ):
            raise ConfigError(
                f"{where}.fail_on: expected a list of mappings such as [{{x: 0.5}}], got "
                f"{fail_on!r}. Fix the value."
            )
        return cls(float(epoch_s), float(fail_rate), tuple(dict(item) for item in fail_on))


def declare_sleep_space(
    hp: Any, options: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> None:
    """Declare ``x``, ``y``, ``units`` and ``optimizer`` on a Keras Tuner ``HyperParameters``."""
    SleepOptions.parse(options)
    for definition in resolve_space(SLEEP_SPACE, overrides or {}, options).values():
        declare(hp, definition)


def sleep_score(values: Mapping[str, Any], epoch: int) -> float:
    """The deterministic validation accuracy in [0, 1] after ``epoch`` (0-based)."""
    x = float(values.get("x", 0.5))
    y = float(values.get("y", 0.5))
    bowl = 1.0 - ((x - 0.3) ** 2 + (y - 0.7) ** 2) / 0.98
    units = max(1.0, float(values.get("units", 128)))
    bonus = -0.01 * abs(math.log2(units / 128.0))
    bonus += _OPTIMIZER_BONUS.get(str(values.get("optimizer", "adam")), -0.02)
    progress = 1.0 - 0.5 * math.exp(-max(0, epoch) / 2.0)
    return min(1.0, max(0.0, (bowl + bonus) * progress))


def _draw(values: Mapping[str, Any], attempt: int) -> float:
    text = json.dumps(dict(values), sort_keys=True, default=str) + f"#{attempt}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def should_fail(values: Mapping[str, Any], attempt: int, options: SleepOptions) -> bool:
    """Whether this trial attempt raises (deterministic in values and attempt)."""
    for pattern in options.fail_on:
        if all(key in values and values[key] == want for key, want in pattern.items()):
            return True
    return options.fail_rate > 0 and _draw(values, attempt) < options.fail_rate


def run_sleep_epoch(
    values: Mapping[str, Any],
    epoch: int,
    options: Mapping[str, Any] | SleepOptions,
    *,
    attempt: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, float]:
    """Run one sleep epoch (0-based) and return its metrics.

    Raises :class:`InjectedTrialFailure` at epoch 0 when the options say this
    attempt fails. ``sleep`` is injectable so tests don't wait.
    """
    opts = options if isinstance(options, SleepOptions) else SleepOptions.parse(options)
    if epoch == 0 and should_fail(values, attempt, opts):
        raise InjectedTrialFailure(
            f"sleep hypermodel: injected failure for values {dict(values)} attempt {attempt} "
            f"(fail_rate={opts.fail_rate}, fail_on={list(opts.fail_on)})"
        )
    if opts.epoch_s > 0:
        sleep(opts.epoch_s)
    val_accuracy = sleep_score(values, epoch)
    accuracy = min(1.0, val_accuracy + 0.02)
    return {
        "val_accuracy": val_accuracy,
        "val_loss": 1.0 - val_accuracy,
        "accuracy": accuracy,
        "loss": 1.0 - accuracy,
    }


def make_sleep_hypermodel(
    options: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Any:
    """A ``keras_tuner.HyperModel`` whose ``build`` declares the sleep space.

    ``build`` returns ``None`` (there is no model); ``fit(hp, None, epochs=N)``
    runs N sleep epochs and returns the last metrics. The trial runner should
    call :func:`run_sleep_epoch` itself to report per epoch. Imports
    keras_tuner, so only call it where TF is acceptable.
    """
    import keras_tuner  # noqa: PLC0415 - lazy: this module must stay TF-free

    parsed = SleepOptions.parse(options)
    frozen_overrides = dict(overrides or {})

    class SleepHyperModel(keras_tuner.HyperModel):  # type: ignore[misc]
        """Model-free hypermodel for benchmarks and fault tests."""

        def declare_hyperparameters(self, hp: Any) -> None:
            declare_sleep_space(hp, options, frozen_overrides)

        def build(self, hp: Any) -> None:
            self.declare_hyperparameters(hp)
            return None

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            metrics: dict[str, float] = {}
            for epoch in range(int(kwargs.get("epochs", 1))):
                metrics = run_sleep_epoch(hp.values, epoch, parsed)
            return metrics

    return SleepHyperModel(name="sleep")
