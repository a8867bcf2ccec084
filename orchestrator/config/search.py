"""The search file: what to tune (hypermodel, dataset), how (oracle, training), and where.

The dataset section is :mod:`orchestrator.config.dataset`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    field_validator,
    model_serializer,
    model_validator,
)

from orchestrator.config import limits
from orchestrator.config.dataset import DatasetSpec
from orchestrator.config.errors_format import FieldProblems, Problem, number_hint
from orchestrator.config.spec_base import (
    NAME_PATTERN,
    Epochs,
    FrozenModel,
    HeartbeatSeconds,
    LeaseSeconds,
    Seed,
    check_path_text,
    check_reference,
    shorthand,
)
from orchestrator.protocol.names import METRIC_NAME_RULE, is_metric_name, shown_name

BUILTIN_HYPERMODELS: tuple[str, ...] = ("cnn", "mlp", "transfer", "sleep")
_OVERRIDE_KEYS = frozenset({"min", "max", "step", "sampling", "values", "value", "default"})
_SAMPLINGS = ("linear", "log", "reverse_log")


def _override_problems(name: str, spec: Any) -> list[Problem]:
    path: tuple[str | int, ...] = ("overrides", name)
    if not isinstance(spec, dict):
        return [
            Problem(
                path,
                f"expected a mapping such as {{min: 16, max: 64}}, {{values: [a, b]}} or "
                f"{{value: x}}, got {spec!r}. Write the override as a mapping.",
            )
        ]
    unknown = sorted(set(spec) - _OVERRIDE_KEYS)
    if unknown:
        return [
            Problem(
                (*path, unknown[0]),
                f"unknown override key {unknown[0]!r}; expected one of "
                f"{', '.join(sorted(_OVERRIDE_KEYS))}. Rename or remove it.",
            )
        ]
    forms = [
        f
        for f in ("range", "values", "value")
        if (f in spec if f != "range" else "min" in spec or "max" in spec)
    ]
    if len(forms) != 1:
        return [
            Problem(
                path,
                "expected exactly one form: {min, max[, step, sampling]} for a number range, "
                f"{{values: [...]}} for a choice, or {{value: x}} to fix it; got keys "
                f"{sorted(spec)}. Keep one form.",
            )
        ]
    if forms == ["range"]:
        low, high = spec.get("min"), spec.get("max")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            hint = number_hint(low) or number_hint(high)
            return [
                Problem(
                    path,
                    f"expected numeric min and max, got min={low!r}, max={high!r}{hint}. "
                    "Write both as numbers.",
                )
            ]
        if low > high:  # type: ignore[operator]
            return [
                Problem(path, f"`min <= max` must hold, but got min={low}, max={high}. Swap them.")
            ]
        if spec.get("sampling", "linear") not in _SAMPLINGS:
            return [
                Problem(
                    (*path, "sampling"),
                    f"expected one of {', '.join(_SAMPLINGS)}, got {spec['sampling']!r}. "
                    "Use one of those.",
                )
            ]
    if forms == ["values"] and (not isinstance(spec["values"], list) or not spec["values"]):
        return [
            Problem(
                (*path, "values"),
                f"expected a non-empty list, got {spec['values']!r}. List at least one value.",
            )
        ]
    return []


def check_metric_name(value: str) -> str:
    """The chief's rule for metric names (:func:`orchestrator.protocol.names.is_metric_name`):
    a name it would refuse in every report cannot be the objective or the monitor."""
    if not is_metric_name(value):
        raise ValueError(
            f"expected a metric name: {METRIC_NAME_RULE} (the chief refuses any other in a "
            f"report), got {shown_name(value)}. Use the name Keras "
            "logs the metric under, such as val_accuracy or val_loss."
        )
    return value


class HypermodelSpec(FrozenModel):
    """The model to tune: a built-in (``cnn``, ``mlp``, ``transfer``, ``sleep``) or ``module:attr``.

    ``overrides`` narrow or fix hyperparameter ranges; ``options`` are other settings.
    The shorthand ``hypermodel: cnn`` means ``{name: cnn}``.
    """

    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return shorthand(data, "name")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        check_reference(value, BUILTIN_HYPERMODELS, "hypermodel")
        return value

    @model_validator(mode="after")
    def _overrides(self) -> HypermodelSpec:
        problems = [p for k, v in self.overrides.items() for p in _override_problems(k, v)]
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def is_builtin(self) -> bool:
        """True for a built-in hypermodel name."""
        return self.name in BUILTIN_HYPERMODELS

    @property
    def module(self) -> str | None:
        """The module of a ``module:attribute`` reference (None for built-ins)."""
        return None if self.is_builtin else self.name.split(":", 1)[0]

    @property
    def attribute(self) -> str | None:
        """The attribute of a ``module:attribute`` reference (None for built-ins)."""
        return None if self.is_builtin else self.name.split(":", 1)[1]


class ObjectiveSpec(FrozenModel):
    """The metric to optimise. Without a direction: ``*loss``/``*error`` -> min, else max."""

    name: str = "val_accuracy"
    direction: Literal["max", "min"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return shorthand(data, "name")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_metric_name(value)

    @property
    def resolved_direction(self) -> Literal["max", "min"]:
        """The explicit direction, else inferred from the metric's name."""
        if self.direction is not None:
            return self.direction
        return "min" if self.name.endswith(("loss", "error")) else "max"


_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "hyperband": ("max_epochs", "factor", "hyperband_iterations"),
    "bayesian": ("num_initial_points", "alpha", "beta"),
}


class OracleSpec(FrozenModel):
    """The search algorithm and its parameters. Type-specific keys are refused on other types."""

    type: Literal["random", "grid", "bayesian", "hyperband"] = "random"
    max_trials: StrictInt | None = Field(10, ge=1, le=limits.MAX_TRIALS)
    seed: Seed | None = None
    executions_per_trial: StrictInt = Field(1, ge=1, le=limits.MAX_EXECUTIONS_PER_TRIAL)
    max_epochs: Epochs = 10
    factor: StrictInt = Field(3, ge=2, le=limits.MAX_HYPERBAND_FACTOR)
    hyperband_iterations: StrictInt = Field(1, ge=1, le=limits.MAX_HYPERBAND_ITERATIONS)
    num_initial_points: StrictInt | None = Field(None, ge=1, le=limits.MAX_TRIALS)
    alpha: float = Field(1e-4, gt=0, le=limits.MAX_BAYESIAN_COEFFICIENT)
    beta: float = Field(2.6, gt=0, le=limits.MAX_BAYESIAN_COEFFICIENT)

    @model_validator(mode="after")
    def _type_keys(self) -> OracleSpec:
        problems: list[Problem] = []
        for owner, keys in _TYPE_KEYS.items():
            if owner == self.type:
                continue
            problems.extend(
                Problem(
                    (key,),
                    f"'{key}' is a {owner} setting, but oracle.type is {self.type!r}; "
                    f"expected only {self.type} settings here. Remove it or set type: {owner}.",
                )
                for key in keys
                if key in self.model_fields_set
            )
        if self.type == "hyperband" and "max_trials" in self.model_fields_set:
            problems.append(
                Problem(
                    ("max_trials",),
                    "hyperband does not use max_trials (its budget is max_epochs, factor and "
                    "hyperband_iterations); expected no max_trials. Remove it.",
                )
            )
        if self.type in ("random", "bayesian") and self.max_trials is None:
            problems.append(
                Problem(
                    ("max_trials",),
                    f"the {self.type} oracle needs max_trials; expected an integer >= 1, got null. "
                    "Set max_trials.",
                )
            )
        if problems:
            raise FieldProblems(problems)
        if self.type == "hyperband" or (
            self.type == "grid" and "max_trials" not in self.model_fields_set
        ):
            # Hyperband's budget is max_epochs/factor/iterations: no trial cap.
            # A grid without max_trials runs every point, as Keras Tuner's
            # GridSearch does (its oracle answers STOPPED once the grid is done).
            object.__setattr__(self, "max_trials", None)
        return self

    @model_serializer(mode="wrap")
    def _only_own_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the keys this oracle type uses, so a dump validates again
        (the validator refuses another type's keys)."""
        data: dict[str, Any] = handler(self)
        for owner, keys in _TYPE_KEYS.items():
            if owner != self.type:
                for key in keys:
                    data.pop(key, None)
        if self.type == "hyperband":
            data.pop("max_trials", None)
        return data


class EarlyStoppingSpec(FrozenModel):
    """Stop a trial's training when ``monitor`` stops improving."""

    monitor: str = "val_loss"
    patience: StrictInt = Field(3, ge=0, le=limits.MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0)

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, value: str) -> str:
        return check_metric_name(value)


class TrainingSpec(FrozenModel):
    """How each trial trains: epochs, batch size, early stopping, Keras verbosity."""

    epochs: Epochs = 10
    batch_size: StrictInt = Field(32, ge=1, le=limits.MAX_BATCH_SIZE)
    early_stopping: EarlyStoppingSpec | None = None
    verbose: StrictInt = Field(0, ge=0, le=2)


_SCHEDULER_KEYS: dict[str, tuple[str, ...]] = {
    "asha": ("reduction_factor", "max_epochs"),
    "median": ("min_trials",),
}


class SchedulerSpec(FrozenModel):
    """Stop bad trials early, at the chief (orchestrator/chief/schedulers.py).

    Epochs count epochs trained: ``grace_epochs: 1`` first judges a trial
    after its first epoch (Keras' epoch 0). Type-specific keys are refused on
    the other type.

    - ``asha``: rungs after ``grace_epochs * reduction_factor**k`` epochs
      (below ``max_epochs``, default ``training.epochs``); a trial goes on past
      a rung only in the top ``1/reduction_factor`` of the trials there so far.
    - ``median``: from ``grace_epochs`` on, a trial whose best score so far is
      worse than the median of the other trials' at the same epoch stops, once
      ``min_trials`` other trials reached that epoch.
    """

    type: Literal["asha", "median"]
    grace_epochs: Epochs = 1
    reduction_factor: StrictInt = Field(3, ge=2, le=limits.MAX_HYPERBAND_FACTOR)
    max_epochs: Epochs | None = None
    min_trials: StrictInt = Field(2, ge=1, le=limits.MAX_TRIALS)

    @model_validator(mode="after")
    def _type_keys(self) -> SchedulerSpec:
        problems = [
            Problem(
                (key,),
                f"'{key}' is an {owner} setting, but scheduler.type is {self.type!r}; "
                f"expected only {self.type} settings here. Remove it or set type: {owner}.",
            )
            for owner, keys in _SCHEDULER_KEYS.items()
            if owner != self.type
            for key in keys
            if key in self.model_fields_set
        ]
        if problems:
            raise FieldProblems(problems)
        return self

    @model_serializer(mode="wrap")
    def _only_own_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Dump only the keys this type uses, so a dump validates again."""
        data: dict[str, Any] = handler(self)
        for owner, keys in _SCHEDULER_KEYS.items():
            if owner != self.type:
                for key in keys:
                    data.pop(key, None)
        return data


class FailurePolicy(FrozenModel):
    """Retries, the consecutive-failure limit, and trial leases (heartbeat < lease timeout)."""

    retries_per_trial: StrictInt = Field(2, ge=0, le=limits.MAX_RETRIES_PER_TRIAL)
    # A deterministic error (a ValueError or TypeError from the model: a shape
    # mismatch) fails the same way on every retry, so its trial fails at once
    # unless this is set (workers/failures.py has the table).
    retry_deterministic: StrictBool = False
    max_consecutive_failed_trials: StrictInt = Field(5, ge=1, le=limits.MAX_TRIALS)
    lease_timeout_s: LeaseSeconds = 60.0
    heartbeat_interval_s: HeartbeatSeconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_heartbeat(cls, data: Any) -> Any:
        # Filled in before validation so the frozen model always has a number.
        if isinstance(data, dict) and data.get("heartbeat_interval_s") is None:
            lease = data.get("lease_timeout_s", 60.0)
            if (
                isinstance(lease, (int, float))
                and not isinstance(lease, bool)
                and limits.MIN_LEASE_TIMEOUT_S <= lease <= limits.MAX_LEASE_TIMEOUT_S
            ):
                return {**data, "heartbeat_interval_s": lease / 4}
        return data

    @model_validator(mode="after")
    def _heartbeat(self) -> FailurePolicy:
        hb = self.heartbeat_interval_s
        if hb is not None and hb >= self.lease_timeout_s:
            raise FieldProblems.one(
                ("heartbeat_interval_s",),
                f"`heartbeat_interval_s < lease_timeout_s` must hold, but got "
                f"heartbeat_interval_s={hb:g}, lease_timeout_s={self.lease_timeout_s:g}. "
                "Lower the heartbeat (a quarter of the lease is a good value).",
            )
        return self


class OutputSpec(FrozenModel):
    """Where the search directory goes (default ``./searches/<name>-<timestamp>``)."""

    directory: str | None = None

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        # Whether the folder is usable is checked on the submitting machine
        # (orchestrator.config.preflight), not here: a resumed search revalidates
        # this spec while its folder exists and holds its ledger.
        if value is not None:
            check_path_text(value)
        return value


class SearchSpec(FrozenModel):
    """A whole search file."""

    kind: Literal["search"] = "search"
    name: str = Field("search", pattern=NAME_PATTERN, max_length=128)
    hypermodel: HypermodelSpec
    dataset: DatasetSpec | None = None
    objective: ObjectiveSpec = ObjectiveSpec()
    oracle: OracleSpec = OracleSpec()
    training: TrainingSpec = TrainingSpec()
    scheduler: SchedulerSpec | None = None
    failure: FailurePolicy = FailurePolicy()
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _scheduler_fits(self) -> SearchSpec:
        spec = self.scheduler
        if spec is None:
            return self
        if self.oracle.type == "hyperband":
            raise FieldProblems.one(
                ("scheduler",),
                "hyperband already stops trials early (its brackets), so a scheduler would "
                "fight it; expected no scheduler with oracle.type: hyperband. Remove the "
                "scheduler section, or use oracle.type random, grid or bayesian with it.",
            )
        if spec.max_epochs is not None and spec.max_epochs > self.training.epochs:
            raise FieldProblems.one(
                ("scheduler", "max_epochs"),
                f"`scheduler.max_epochs <= training.epochs` must hold (a trial trains at most "
                f"training.epochs), but got max_epochs={spec.max_epochs}, "
                f"training.epochs={self.training.epochs}. Lower max_epochs, or raise "
                "training.epochs.",
            )
        return self

    @property
    def scheduler_max_epochs(self) -> int | None:
        """The epochs a trial may train under the trial scheduler (its
        ``max_epochs``, else ``training.epochs``); None without a scheduler."""
        if self.scheduler is None:
            return None
        return self.scheduler.max_epochs or self.training.epochs

    def resolve_directory(self, now: datetime | None = None) -> Path:
        """The search directory: ``output.directory``, else ``searches/<name>-<YYYYmmdd-HHMMSS>``.

        Relative paths are relative to the current working directory.
        """
        if self.output.directory is not None:
            return Path(self.output.directory).expanduser()
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        return Path("searches") / f"{self.name}-{stamp}"
