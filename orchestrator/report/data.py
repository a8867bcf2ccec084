"""What a report shows, read from the ledger alone: plain, typed rows.

:func:`read_report_data` opens the ledger read-only (a running chief may be
writing it: SQLite WAL gives this reader a consistent snapshot per query),
folds it into a :class:`~orchestrator.chief.trial_book.TrialBook` with the
project's own :func:`~orchestrator.chief.replay.replay`, and adds what the book
does not keep: every epoch's metrics. The book holds only a trial's last
report; the per-epoch history is read from the ledger's ``progress`` events.

A trial's curves are those of its *last* attempt: an attempt that was lost
and re-run starts again from epoch 0, and only the last one produced the
trial's result.

Everything the pictures, the HTML and the TensorBoard summaries show comes
from a :class:`ReportData`; nothing else is read.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.chief.events import TrialProgress, decoder_for
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import ReplayedSearch, replay
from orchestrator.errors import LedgerError
from orchestrator.protocol.trials import SearchState, TrialStatus
from orchestrator.search_dir import LEDGER_FILE, require_search_dir
from orchestrator.search_meta import SearchMeta

# Keras Tuner's own bookkeeping values (Hyperband's epochs and bracket): not
# hyperparameters a user chose, so never plotted as one.
TUNER_PREFIX = "tuner/"


@dataclass(frozen=True)
class EpochReport:
    """One epoch's metrics, as the worker reported them (``epoch`` counts from 0)."""

    epoch: int
    ts: float
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class TrialRow:
    """One trial, as the report shows it."""

    trial_id: str
    status: TrialStatus
    attempts: int
    worker_id: str | None
    values: Mapping[str, Any]
    score: float | None
    best_step: int
    created_ts: float
    ended_ts: float | None
    duration_s: float | None
    error_message: str | None
    history: tuple[EpochReport, ...]  # the last attempt's epochs, by epoch
    planned_epochs: int | None  # what it was asked to train for (Hyperband: tuner/epochs)
    # The chief's trial scheduler stopped it (the search file's ``scheduler:``).
    stopped_by_scheduler: bool = False

    @property
    def epochs_run(self) -> int:
        """How many epochs the last attempt reported."""
        return len(self.history)

    @property
    def stopped_early(self) -> bool:
        """Completed before its planned epochs (an EarlyStopping callback, or the
        trial scheduler: :attr:`stopped_by_scheduler` tells them apart)."""
        if self.status is TrialStatus.COMPLETED and self.stopped_by_scheduler:
            return True
        if self.status is not TrialStatus.COMPLETED or self.planned_epochs is None:
            return False
        if not self.history:
            return False
        return self.history[-1].epoch + 1 < self.planned_epochs

    def curve(self, metric: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """(epochs, values) of ``metric`` over the last attempt (epochs without it skipped)."""
        points = [(r.epoch, r.metrics[metric]) for r in self.history if metric in r.metrics]
        return tuple(e for e, _ in points), tuple(v for _, v in points)

    def metric_names(self) -> set[str]:
        """Every metric any of its epochs reported."""
        return {name for report in self.history for name in report.metrics}


@dataclass(frozen=True)
class HyperparameterRow:
    """One hyperparameter of the search space (Keras Tuner's config, typed)."""

    name: str
    kind: str  # Keras Tuner's class name: Float, Int, Choice, Boolean, Fixed
    default: Any
    min_value: float | None = None
    max_value: float | None = None
    step: float | None = None
    sampling: str | None = None  # linear, log, reverse_log
    choices: tuple[Any, ...] = ()  # Choice's values; Boolean: (False, True); Fixed: (value,)
    conditions: tuple[str, ...] = ()  # "activation in ['relu', 'gelu']"

    @property
    def categorical(self) -> bool:
        """Plotted as categories (Choice, Boolean, Fixed), not on a number line."""
        return self.kind in ("Choice", "Boolean", "Fixed")

    @property
    def log_scale(self) -> bool:
        return self.sampling in ("log", "reverse_log")

    def range_text(self) -> str:
        """The range or the values, as Keras Tuner's search_space_summary says them."""
        if self.categorical:
            return ", ".join(repr(c) for c in self.choices)
        text = f"{self.min_value:g} .. {self.max_value:g}"
        if self.step is not None:
            text += f", step {self.step:g}"
        if self.sampling and self.sampling != "linear":
            text += f", {self.sampling}"
        return text


@dataclass(frozen=True)
class ReportData:
    """A search as its report shows it. Trials are in creation order."""

    search_dir: Path
    name: str
    search_id: str
    state: SearchState
    message: str
    objective: str
    direction: str  # "min" | "max"
    max_trials: int | None
    created_at: float | None
    trials: tuple[TrialRow, ...]
    space: tuple[HyperparameterRow, ...]
    damaged: tuple[str, ...] = field(default=())

    def counts(self) -> dict[TrialStatus, int]:
        """Trials per status (every status present, zeros included)."""
        counts = Counter(t.status for t in self.trials)
        return {status: counts.get(status, 0) for status in TrialStatus}

    def completed(self) -> list[TrialRow]:
        """Completed trials with a score, in end order (then id)."""
        done = [t for t in self.trials if t.status is TrialStatus.COMPLETED and t.score is not None]
        return sorted(done, key=lambda t: (t.ended_ts or 0.0, t.trial_id))

    def best(self) -> TrialRow | None:
        """The completed trial with the best score (first to reach it on a tie)."""
        sign = 1.0 if self.direction == "max" else -1.0
        best: TrialRow | None = None
        best_score = -math.inf
        for trial in self.completed():
            score = sign * (trial.score or 0.0)  # completed() keeps scored trials only
            if best is None or score > best_score:
                best, best_score = trial, score
        return best

    def ranked(self) -> list[TrialRow]:
        """Completed trials best first, then the rest in creation order."""
        sign = -1.0 if self.direction == "max" else 1.0
        done = sorted(self.completed(), key=lambda t: (sign * (t.score or 0.0), t.trial_id))
        rest = [t for t in self.trials if t.status is not TrialStatus.COMPLETED or t.score is None]
        return done + rest

    def hyperparameter_names(self) -> list[str]:
        """The space's hyperparameters, then any other value a trial ran with
        (a conditional one the space never declared), Keras Tuner's own left out."""
        names = [hp.name for hp in self.space]
        seen = set(names)
        for trial in self.trials:
            for name in trial.values:
                if name not in seen and not name.startswith(TUNER_PREFIX):
                    seen.add(name)
                    names.append(name)
        return names

    def metric_names(self) -> list[str]:
        """Every per-epoch metric any trial reported: train ones first, each
        followed by its ``val_`` twin."""
        names: set[str] = set()
        for trial in self.trials:
            names |= trial.metric_names()
        return sorted(names, key=_metric_order)


def _metric_order(name: str) -> tuple[str, int]:
    base = name[4:] if name.startswith("val_") else name
    return (base, 1 if name.startswith("val_") else 0)


def read_report_data(search_dir: Path | str) -> ReportData:
    """Read a search directory's ledger into a :class:`ReportData`.

    Raises :class:`~orchestrator.errors.SearchDirError` (bad input) when the
    directory holds no ledger, and :class:`~orchestrator.errors.LedgerError`
    when the ledger is not one a search wrote (unreadable, no search spec).
    Rows that do not decode are skipped and listed in ``damaged``.
    """
    path = require_search_dir(Path(search_dir))
    ledger_path = path / LEDGER_FILE
    try:
        with Ledger(ledger_path, read_only=True) as ledger:
            replayed = replay(ledger)
            histories = _histories(ledger, replayed)
    except sqlite3.Error as exc:  # not a database, or not the ledger's tables
        raise LedgerError(
            f"{ledger_path}: cannot read the ledger ({type(exc).__name__}: {exc}); expected the "
            "SQLite ledger that `ktc submit` writes, with its meta and events tables. If it was "
            "copied from a running search, copy ledger.db-wal beside it too; otherwise restore "
            "the file from the search directory it came from"
        ) from exc
    meta = SearchMeta.parse(replayed.meta, source=ledger_path)
    search = meta.search
    default_epochs = search.training.epochs
    trials = []
    for trial_id in replayed.start_order:
        rec = replayed.records[trial_id]
        tuner_epochs = rec.values.get("tuner/epochs")
        planned = int(tuner_epochs) if isinstance(tuner_epochs, int) else default_epochs
        trials.append(
            TrialRow(
                trial_id=trial_id,
                status=rec.status,
                attempts=rec.attempt,
                worker_id=rec.worker_id,
                values=dict(rec.values),
                score=rec.score,
                best_step=rec.best_step,
                created_ts=rec.created_ts,
                ended_ts=rec.ended_ts,
                duration_s=rec.duration_s,
                error_message=rec.error_message,
                history=histories.get((trial_id, rec.attempt), ()),
                planned_epochs=planned,
                stopped_by_scheduler=rec.stopped_early,
            )
        )
    return ReportData(
        search_dir=path,
        name=meta.name,
        search_id=meta.search_id,
        state=replayed.state,
        message=replayed.message,
        objective=search.objective.name,
        direction=search.objective.resolved_direction,
        max_trials=search.oracle.max_trials,
        created_at=meta.created_at,
        trials=tuple(trials),
        space=tuple(space_rows(replayed.space_config)),
        damaged=tuple(str(error) for error in replayed.damaged),
    )


def _histories(
    ledger: Ledger, replayed: ReplayedSearch
) -> dict[tuple[str, int], tuple[EpochReport, ...]]:
    """Every epoch of each trial's last attempt, from the ``progress`` rows.

    Only progress rows are decoded (replay decoded the rest). Rows committed
    after replay read the ledger (the chief runs on) are left for the next
    report: a trial or attempt the book does not know is skipped.
    """
    decode = decoder_for(ledger.schema_version(), source=str(ledger.path))
    wanted = {(tid, rec.attempt) for tid, rec in replayed.records.items()}
    by_attempt: dict[tuple[str, int], dict[int, EpochReport]] = {}
    for row in _progress_rows(ledger, replayed.last_seq):
        key = (row.trial_id or "", row.attempt or 0)
        if key not in wanted:
            continue
        try:
            event = decode(row)
        except LedgerError:
            continue  # replay listed it in `damaged` already
        if not isinstance(event, TrialProgress):
            continue
        # A repeated epoch (a worker's retried Report) keeps the last value.
        by_attempt.setdefault(key, {})[event.epoch] = EpochReport(
            epoch=event.epoch, ts=row.ts, metrics=event.metrics
        )
    return {key: tuple(epochs[e] for e in sorted(epochs)) for key, epochs in by_attempt.items()}


def _progress_rows(ledger: Ledger, last_seq: int) -> Iterator[Any]:
    for row in ledger.rows():
        if row.seq > last_seq:
            return
        if row.kind == "progress":
            yield row


def space_rows(config: Mapping[str, Any] | None) -> list[HyperparameterRow]:
    """The search space's hyperparameters from Keras Tuner's
    ``HyperParameters.get_config()`` (as the ledger's ``space`` event stores it)."""
    if not config:
        return []
    rows = []
    for entry in config.get("space", []):
        kind = str(entry.get("class_name", "?"))
        cfg = entry.get("config", {})
        choices: tuple[Any, ...] = ()
        if kind == "Choice":
            choices = tuple(cfg.get("values", ()))
        elif kind == "Boolean":
            choices = (False, True)
        elif kind == "Fixed":
            choices = (cfg.get("value"),)
        rows.append(
            HyperparameterRow(
                name=str(cfg.get("name", "?")),
                kind=kind,
                default=cfg.get("default", cfg.get("value")),
                min_value=_number(cfg.get("min_value")),
                max_value=_number(cfg.get("max_value")),
                step=_number(cfg.get("step")),
                sampling=cfg.get("sampling"),
                choices=choices,
                conditions=tuple(_condition_text(c) for c in cfg.get("conditions", ())),
            )
        )
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _condition_text(condition: Mapping[str, Any]) -> str:
    """Keras Tuner's ``Parent`` condition: "<parent> in [values]"."""
    cfg = condition.get("config", {})
    if condition.get("class_name") == "Parent":
        return f"{cfg.get('name')} in {list(cfg.get('values', []))!r}"
    return f"{condition.get('class_name')}: {cfg!r}"
