"""The report's pictures: matplotlib (Agg, no display) PNG files of :mod:`.series`.

Cost: a figure costs tens of milliseconds however few lines it holds, and a
line artist per trial costs more than the drawing. So every picture holds many
trials: the learning curves are one figure per metric family (every trial's
curve in one ``LineCollection``, the best few drawn on top in colour), not a
file per trial; 1,000 trials of 20 epochs render in a few seconds
(``python -m bench.report_speed``).
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a display, never a GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from orchestrator.report.data import ReportData  # noqa: E402
from orchestrator.report.series import (  # noqa: E402
    BestSoFar,
    HyperparameterScatter,
    LearningCurves,
    ParallelCoordinates,
    best_so_far,
    learning_curves,
    parallel_coordinates,
    score_by_hyperparameter,
    trial_label,
)

DPI = 100
_GREY = "#9aa3ad"
_BEST = "#d62728"
_SCORE_MAP = "viridis"
# Past this many trials, the background curves get fainter so the mass stays readable.
_FAINT_FROM = 100


@dataclass(frozen=True)
class Picture:
    """A PNG the report links: its file name (relative to the report folder),
    a title and a one-line caption."""

    file_name: str
    title: str
    caption: str


def render_pictures(data: ReportData, out_dir: Path, *, processes: int = 1) -> list[Picture]:
    """Draw every picture of ``data`` into ``out_dir``; returns them in page order.

    ``processes=2`` draws every other picture in a forked copy of this process
    (the warm render process of a running search does: its final render is on
    the path between the search's last result and the exit). A process with
    other threads draws them all itself: fork copies none of them, and a lock
    one of them held would stay held in the copy.
    """
    drawings = _drawings(data, out_dir)
    alone = threading.active_count() == 1
    if processes < 2 or len(drawings) < 2 or not hasattr(os, "fork") or not alone:
        return [draw() for draw in drawings]
    return _draw_in_two(drawings)


def _drawings(data: ReportData, out_dir: Path) -> list[Callable[[], Picture]]:
    """One call per picture, in page order (nothing drawn yet)."""
    labels = {t.trial_id: trial_label(t) for t in data.trials}
    rank = {t.trial_id: i for i, t in enumerate(data.ranked())}
    drawings: list[Callable[[], Picture]] = [
        functools.partial(_learning_curves, family, labels, rank, out_dir)
        for family in learning_curves(data)
    ]
    best = best_so_far(data)
    if best.scores:
        drawings.append(functools.partial(_best_so_far, best, data.objective, out_dir))
    scatters = [s for s in score_by_hyperparameter(data) if s.scores]
    if scatters:
        drawings.append(functools.partial(_score_by_hyperparameter, scatters, data, out_dir))
    parallel = parallel_coordinates(data)
    if parallel.lines:
        drawings.append(functools.partial(_parallel, parallel, data, out_dir))
    return drawings


def _draw_in_two(drawings: list[Callable[[], Picture]]) -> list[Picture]:
    """The odd-numbered drawings in a forked child, the others here; page order kept.
    A child that fails raises here (RuntimeError with its error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw, send the pictures (or the error) back, leave at once
        os.close(read_end)
        code = 0
        try:
            reply: object = [draw() for draw in drawings[1::2]]
        except BaseException as exc:  # noqa: BLE001 - the parent raises it
            reply, code = f"{type(exc).__name__}: {exc}", 1
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(reply, out)
        os._exit(code)
    os.close(write_end)
    try:
        here = [draw() for draw in drawings[0::2]]
    finally:
        with os.fdopen(read_end, "rb") as back:
            data = back.read()
        os.waitpid(pid, 0)
    there = pickle.loads(data) if data else "the drawing process sent nothing back"
    if not isinstance(there, list):
        raise RuntimeError(f"drawing the report's pictures failed: {there}")
    pictures: list[Picture] = []
    for i in range(len(drawings)):
        pictures.append(here[i // 2] if i % 2 == 0 else there[i // 2])
    return pictures


def _save(fig: Figure, out_dir: Path, file_name: str) -> None:
    fig.savefig(out_dir / file_name, dpi=DPI, format="png")
    plt.close(fig)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _learning_curves(
    family: LearningCurves, labels: Mapping[str, str], rank: Mapping[str, int], out_dir: Path
) -> Picture:
    panels = family.panels
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(6.0 * len(panels), 4.4),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    trials = 0
    for ax, panel in zip(axes[0], panels, strict=True):
        background = [c for c in panel.curves if not c.highlighted]
        trials = max(trials, len(panel.curves))
        alpha = 0.5 if len(panel.curves) < _FAINT_FROM else 0.15
        lines = [c for c in background if len(c.epochs) > 1]
        if lines:
            segments = [list(zip(c.epochs, c.values, strict=True)) for c in lines]
            ax.add_collection(
                LineCollection(
                    segments, colors=_GREY, linewidths=0.8, alpha=alpha, label="other trials"
                )
            )
        points = [c for c in background if len(c.epochs) == 1]
        if points:
            # One epoch (a trial scheduler's first rung, an early crash): a line of
            # one point draws nothing, so these are dots.
            ax.scatter(
                [c.epochs[0] for c in points],
                [c.values[0] for c in points],
                s=9,
                color=_GREY,
                alpha=max(alpha, 0.4),
                linewidths=0,
                label=None if lines else "other trials",
            )
        best = sorted(
            (c for c in panel.curves if c.highlighted), key=lambda c: rank.get(c.trial_id, 0)
        )
        for curve in best:
            ax.plot(
                curve.epochs,
                curve.values,
                linewidth=1.8,
                marker="o" if len(curve.epochs) < 3 else None,
                markersize=3,
                label=labels.get(curve.trial_id, curve.trial_id),
            )
        ax.autoscale_view()
        ax.set_title(
            ("validation" if panel.metric.startswith("val_") else "training") + f": {panel.metric}"
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(family.base)
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, names = axes[0][-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right upper", fontsize=8, title="best trials")
    fig.suptitle(f"Learning curves: {family.base} ({trials} trials)")
    file_name = f"curves_{_safe(family.base)}.png"
    _save(fig, out_dir, file_name)
    return Picture(
        file_name,
        f"Learning curves: {family.base}",
        f"{family.base} by epoch for every trial's last attempt (grey); the best trials in "
        "colour. Training on the left, validation on the right.",
    )


def _best_so_far(best: BestSoFar, objective: str, out_dir: Path) -> Picture:
    fig, (by_trial, by_time) = plt.subplots(1, 2, figsize=(12.0, 4.4), layout="constrained")
    minutes = [s / 60.0 for s in best.elapsed_s]
    for ax, xs, xlabel in (
        (by_trial, best.trial_numbers, "trials ended"),
        (by_time, minutes, "minutes since the search started"),
    ):
        ax.scatter(xs, best.scores, s=12, color=_GREY, alpha=0.8, label="trial score", zorder=3)
        ax.step(xs, best.best, where="post", color=_BEST, linewidth=2.0, label="best so far")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(objective)
        ax.grid(True, alpha=0.3)
    by_trial.set_title("Best so far, by trial")
    by_time.set_title("Best so far, by time")
    by_time.legend(loc="best", fontsize=8)
    fig.suptitle(f"Best {objective} so far ({best.direction}imise)")
    _save(fig, out_dir, "best_so_far.png")
    return Picture(
        "best_so_far.png",
        "Best score so far",
        f"Each completed trial's {objective} (grey) and the best so far (red), by the number "
        "of trials ended and by wall time.",
    )


def _score_by_hyperparameter(
    scatters: list[HyperparameterScatter], data: ReportData, out_dir: Path
) -> Picture:
    columns = min(3, len(scatters))
    rows = math.ceil(len(scatters) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False, layout="constrained"
    )
    best = data.best()
    for ax, scatter in zip(axes.flat, scatters, strict=False):
        xs = list(scatter.positions)
        if scatter.categorical:
            # Spread the points of a category a little so they do not hide each other.
            xs = [x + _jitter(i) for i, x in enumerate(xs)]
            ax.set_xticks(range(len(scatter.categories)), scatter.categories, rotation=20)
            ax.set_xlim(-0.5, len(scatter.categories) - 0.5)
        elif scatter.log:
            ax.set_xscale("log")
        elif scatter.integer:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.scatter(xs, scatter.scores, s=12, alpha=0.6, color="#1f77b4")
        if best is not None and best.trial_id in scatter.trial_ids:
            i = scatter.trial_ids.index(best.trial_id)
            ax.scatter([xs[i]], [scatter.scores[i]], s=70, marker="*", color=_BEST, zorder=3)
        ax.set_xlabel(scatter.name)
        ax.set_ylabel(data.objective)
        ax.set_title(scatter.name)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(scatters) :]:
        ax.set_visible(False)
    star = f"; red star: the best, trial {best.trial_id}" if best is not None else ""
    fig.suptitle(f"{data.objective} against each hyperparameter (completed trials{star})")
    _save(fig, out_dir, "score_by_hyperparameter.png")
    return Picture(
        "score_by_hyperparameter.png",
        "Score against each hyperparameter",
        "One point per completed trial; the best is a red star. Categorical "
        "hyperparameters are spread sideways a little within their category; fixed ones "
        "(a single value) are left out.",
    )


def _jitter(i: int) -> float:
    # Deterministic: the same search gives the same picture.
    return ((i * 0.618034) % 1.0 - 0.5) * 0.3


def _parallel(parallel: ParallelCoordinates, data: ReportData, out_dir: Path) -> Picture:
    n_axes = len(parallel.axes)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.9 * n_axes), 5.0), layout="constrained")
    xs = list(range(n_axes))
    order = sorted(range(len(parallel.lines)), key=parallel.colour.__getitem__)  # best on top
    segments = [list(zip(xs, parallel.lines[i], strict=True)) for i in order]
    cmap = plt.get_cmap(_SCORE_MAP)
    colours = [cmap(parallel.colour[i]) for i in order]
    alpha = 0.7 if len(segments) < _FAINT_FROM else 0.35
    ax.add_collection(LineCollection(segments, colors=colours, linewidths=1.0, alpha=alpha))
    for x, axis in zip(xs, parallel.axes, strict=True):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in axis.ticks:
            ax.text(
                x + 0.03,
                y,
                label,
                fontsize=7,
                va="center",
                ha="left",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    ax.set_xlim(-0.2, n_axes - 1 + 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, [a.name for a in parallel.axes], rotation=15)
    ax.set_yticks([])
    ax.set_ylabel("each axis scaled to its own range")
    scalar = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0.0, 1.0))
    bar = fig.colorbar(scalar, ax=ax, pad=0.01)
    bar.set_ticks([0.0, 1.0], labels=["worst", "best"])
    bar.set_label(data.objective)
    ax.set_title(
        f"Parallel coordinates: {len(segments)} completed trials, coloured by {data.objective}"
    )
    _save(fig, out_dir, "parallel_coordinates.png")
    return Picture(
        "parallel_coordinates.png",
        "Parallel coordinates",
        "Each completed trial is a line through its hyperparameter values and its score; "
        "each axis is scaled to its own range (log axes on a log scale); yellow is best.",
    )
