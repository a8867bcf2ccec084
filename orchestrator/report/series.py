"""The series each picture of the report plots, as pure functions of :class:`ReportData`.

The pictures (:mod:`.plots`) draw these and nothing else, so a test can check
every plotted number against the ledger without reading pixels: one learning
curve per trial that reported the metric, the running best of the ledger's
scores, each completed trial's value of each hyperparameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.protocol.trials import TrialStatus
from orchestrator.report.data import HyperparameterRow, ReportData, TrialRow

# How many of the best trials the learning curves draw in colour (with a legend).
HIGHLIGHTED_TRIALS = 5


@dataclass(frozen=True)
class Curve:
    """One trial's values of one metric, by epoch (counted from 1, as Keras prints them)."""

    trial_id: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    highlighted: bool  # one of the best trials: drawn in colour, named in the legend


@dataclass(frozen=True)
class MetricPanel:
    """The curves of one metric (``loss``, or ``val_loss``) across trials."""

    metric: str
    curves: tuple[Curve, ...]


@dataclass(frozen=True)
class LearningCurves:
    """One picture: a metric's train panel and its validation panel side by side."""

    base: str  # "loss", "accuracy": the metric without its val_ prefix
    panels: tuple[MetricPanel, ...]  # train first, then val_, each only if reported


def learning_curves(
    data: ReportData, *, highlighted: int = HIGHLIGHTED_TRIALS
) -> list[LearningCurves]:
    """One :class:`LearningCurves` per metric family (``loss``/``val_loss`` share
    one), each panel holding one curve per trial whose last attempt reported it."""
    best_ids = {t.trial_id for t in data.ranked()[:highlighted] if t.score is not None}
    families: dict[str, list[str]] = {}
    for name in data.metric_names():
        base = name[4:] if name.startswith("val_") else name
        families.setdefault(base, []).append(name)
    pictures = []
    for base, names in families.items():
        panels = []
        for name in names:
            curves = []
            for trial in data.trials:
                epochs, values = trial.curve(name)
                if epochs:
                    curves.append(
                        Curve(
                            trial_id=trial.trial_id,
                            epochs=tuple(e + 1 for e in epochs),
                            values=values,
                            highlighted=trial.trial_id in best_ids,
                        )
                    )
            panels.append(MetricPanel(metric=name, curves=tuple(curves)))
        pictures.append(LearningCurves(base=base, panels=tuple(panels)))
    return pictures


@dataclass(frozen=True)
class BestSoFar:
    """Scores of completed trials in the order they ended, and the running best.

    ``trial_numbers``: how many trials had ended (completed or failed) when
    each one ended; ``elapsed_s``: seconds from the search's start.
    """

    trial_ids: tuple[str, ...]
    trial_numbers: tuple[int, ...]
    elapsed_s: tuple[float, ...]
    scores: tuple[float, ...]
    best: tuple[float, ...]  # best[i]: the best of scores[: i + 1] for the direction
    direction: str


def best_so_far(data: ReportData) -> BestSoFar:
    """The best score so far, against trials ended and against wall time."""
    ended = sorted(
        (t for t in data.trials if t.status.is_final and t.ended_ts is not None),
        key=lambda t: (t.ended_ts or 0.0, t.trial_id),
    )
    start = search_start(data)
    pick = max if data.direction == "max" else min
    ids: list[str] = []
    numbers: list[int] = []
    elapsed: list[float] = []
    scores: list[float] = []
    best: list[float] = []
    for number, trial in enumerate(ended, start=1):
        if trial.status is not TrialStatus.COMPLETED or trial.score is None:
            continue
        ids.append(trial.trial_id)
        numbers.append(number)
        elapsed.append((trial.ended_ts or start) - start)
        scores.append(trial.score)
        best.append(trial.score if not best else pick(best[-1], trial.score))
    return BestSoFar(
        trial_ids=tuple(ids),
        trial_numbers=tuple(numbers),
        elapsed_s=tuple(elapsed),
        scores=tuple(scores),
        best=tuple(best),
        direction=data.direction,
    )


def search_start(data: ReportData) -> float:
    """When the search started: its creation time, else its first trial's."""
    if data.created_at is not None:
        return data.created_at
    return min((t.created_ts for t in data.trials), default=0.0)


@dataclass(frozen=True)
class HyperparameterScatter:
    """Score against one hyperparameter, over completed trials that have a value for it.

    Categorical ones: ``positions`` index ``categories``; numeric ones:
    ``positions`` are the values themselves (``log``: drawn on a log axis).
    """

    name: str
    categorical: bool
    log: bool
    integer: bool  # an Int: ticks on whole numbers
    categories: tuple[str, ...]
    trial_ids: tuple[str, ...]
    positions: tuple[float, ...]
    scores: tuple[float, ...]


def varying_hyperparameters(data: ReportData) -> list[str]:
    """The hyperparameters that can take more than one value: the space's, then
    any other a trial ran with. A ``Fixed`` one, or a ``Choice`` of one value,
    explains nothing about the score, so the pictures leave it out (the
    trials table and the search space still show it)."""
    space = {hp.name: hp for hp in data.space}
    names = []
    for name in data.hyperparameter_names():
        hp = space.get(name)
        if hp is not None and (hp.kind == "Fixed" or (hp.categorical and len(hp.choices) < 2)):
            continue
        if hp is None and len({_category(t.values.get(name)) for t in data.trials}) < 2:
            continue
        names.append(name)
    return names


def score_by_hyperparameter(data: ReportData) -> list[HyperparameterScatter]:
    """One scatter per varying hyperparameter (:func:`varying_hyperparameters`),
    over the completed trials that ran with a value for it."""
    space = {hp.name: hp for hp in data.space}
    completed = data.completed()
    scatters = []
    for name in varying_hyperparameters(data):
        trials = [t for t in completed if name in t.values and t.values[name] is not None]
        axis = _axis(space.get(name), [t.values[name] for t in trials])
        scatters.append(
            HyperparameterScatter(
                name=name,
                categorical=axis.categories is not None,
                log=axis.log,
                integer=space[name].kind == "Int" if name in space else False,
                categories=axis.categories or (),
                trial_ids=tuple(t.trial_id for t in trials),
                positions=tuple(axis.position(t.values[name]) for t in trials),
                scores=tuple(t.score or 0.0 for t in trials),
            )
        )
    return scatters


@dataclass(frozen=True)
class _Axis:
    categories: tuple[str, ...] | None  # None: numeric
    log: bool
    low: float
    high: float

    def position(self, value: Any) -> float:
        """The value on this axis: a category's index, or the number."""
        if self.categories is not None:
            return float(self.categories.index(_category(value)))
        return float(value)

    def normalised(self, value: Any) -> float:
        """The value mapped into 0..1 along the axis (its middle when the axis is a point)."""
        if self.categories is not None:
            span = len(self.categories) - 1
            return self.position(value) / span if span else 0.5
        x = float(value)
        low, high = self.low, self.high
        if self.log and low > 0 and x > 0:
            x, low, high = math.log10(x), math.log10(low), math.log10(high)
        return (x - low) / (high - low) if high > low else 0.5


def _category(value: Any) -> str:
    return str(value)


def _axis(hp: HyperparameterRow | None, values: Sequence[Any]) -> _Axis:
    """An axis for a hyperparameter: the space's range or choices, widened to
    every value seen (a space can grow during a search)."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if (hp is not None and hp.categorical) or not numeric:
        categories = [_category(c) for c in hp.choices] if hp is not None else []
        for v in values:
            if _category(v) not in categories:
                categories.append(_category(v))
        return _Axis(categories=tuple(categories), log=False, low=0.0, high=0.0)
    numbers = [float(v) for v in values]
    if hp is not None and hp.min_value is not None:
        numbers.append(hp.min_value)
    if hp is not None and hp.max_value is not None:
        numbers.append(hp.max_value)
    low = min(numbers, default=0.0)
    high = max(numbers, default=1.0)
    log = hp is not None and hp.log_scale and low > 0
    return _Axis(categories=None, log=log, low=low, high=high)


@dataclass(frozen=True)
class ParallelAxis:
    """One vertical axis: its name and the tick labels at its two ends (or its categories)."""

    name: str
    ticks: tuple[tuple[float, str], ...]  # (position in 0..1, label)


@dataclass(frozen=True)
class ParallelCoordinates:
    """Every completed trial as a line across the hyperparameters' axes and the
    score's, each axis normalised to 0..1; a trial without a value for a
    (conditional) hyperparameter has NaN there. ``colour``: the score,
    normalised so 1 is the best."""

    axes: tuple[ParallelAxis, ...]
    trial_ids: tuple[str, ...]
    lines: tuple[tuple[float, ...], ...]
    colour: tuple[float, ...]


def parallel_coordinates(data: ReportData) -> ParallelCoordinates:
    """The parallel-coordinates view of the completed trials."""
    space = {hp.name: hp for hp in data.space}
    completed = data.completed()
    names = varying_hyperparameters(data)
    axes_specs = []
    for name in names:
        seen = [t.values[name] for t in completed if t.values.get(name) is not None]
        axes_specs.append((name, _axis(space.get(name), seen)))
    scores = [t.score or 0.0 for t in completed]
    score_axis = _Axis(
        categories=None, log=False, low=min(scores, default=0.0), high=max(scores, default=1.0)
    )
    lines = []
    for trial in completed:
        row = [
            axis.normalised(trial.values[name]) if trial.values.get(name) is not None else math.nan
            for name, axis in axes_specs
        ]
        row.append(score_axis.normalised(trial.score or 0.0))
        lines.append(tuple(row))
    colour = [line[-1] if data.direction == "max" else 1.0 - line[-1] for line in lines]
    axes = [ParallelAxis(name, _ticks(axis)) for name, axis in axes_specs]
    axes.append(ParallelAxis(f"{data.objective} ({data.direction})", _ticks(score_axis)))
    return ParallelCoordinates(
        axes=tuple(axes),
        trial_ids=tuple(t.trial_id for t in completed),
        lines=tuple(lines),
        colour=tuple(colour),
    )


def _ticks(axis: _Axis) -> tuple[tuple[float, str], ...]:
    if axis.categories is not None:
        return tuple((axis.normalised(c), _short(c)) for c in axis.categories)
    if axis.high <= axis.low:
        return ((0.5, f"{axis.low:.4g}"),)
    return ((0.0, f"{axis.low:.4g}"), (1.0, f"{axis.high:.4g}"))


def _short(text: str, limit: int = 14) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trial_label(trial: TrialRow) -> str:
    """How a trial is named in legends: its id and score."""
    if trial.score is None:
        return f"trial {trial.trial_id}"
    return f"trial {trial.trial_id} ({trial.score:.4g})"
