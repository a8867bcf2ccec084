"""TensorBoard summaries of a search, written from its ledger under ``DIR/tensorboard/``.

``tensorboard --logdir DIR/tensorboard`` then shows:

- one run per trial, ``trial_<id>/``: every per-epoch metric the trial's last
  attempt reported, as a scalar at step = epoch (counted from 0, as Keras
  does), plus ``score``, the trial's objective score as the ledger records it;
- the HParams plugin's data: the experiment (every hyperparameter with its
  domain, and the metrics) in the root run, and each trial's session (its
  hyperparameter values, start time, and end status) in its own run.

The chief's side writes them from the ledger, so workers need no shared
filesystem. No TensorFlow: the records are TensorBoard's own protos framed as
TFRecords by TensorBoard's own ``RecordWriter`` (importing TensorFlow costs
seconds, and the refresher runs this in a fresh process each time).

Incremental: a trial's run is written once, when the trial has ended
(completed or failed), each file to a temporary name and renamed, so a
running TensorBoard never reads half a file; later refreshes skip it. A trial
still running appears once it ends. The experiment file is rewritten (a new
file, the old one removed) only when the space or the metrics change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams
from tensorboard.summary.writer.record_writer import RecordWriter

from orchestrator.protocol.trials import TrialStatus
from orchestrator.report.data import TUNER_PREFIX, HyperparameterRow, ReportData, TrialRow
from orchestrator.report.paths import tensorboard_dir
from orchestrator.search_dir import private_files

log = logging.getLogger(__name__)

SCORE_TAG = "score"
TRIAL_RUN_PREFIX = "trial_"
# The suffixes name our files among any others a user puts in the folder.
_TRIAL_SUFFIX = ".ktc-trial"
_EXPERIMENT_SUFFIX = ".ktc-experiment"


@dataclass(frozen=True)
class TensorBoardWrite:
    """What one call wrote: trial runs written now, already there, not ended yet."""

    log_dir: Path
    written: int
    already: int
    not_ended: int
    experiment_written: bool


def trial_run_dir(search_dir: Path | str, trial_id: str) -> Path:
    """The run directory of one trial (trial ids are checked names: no ``/``, no ``..``)."""
    return tensorboard_dir(search_dir) / f"{TRIAL_RUN_PREFIX}{trial_id}"


def write_tensorboard(data: ReportData) -> TensorBoardWrite:
    """Write the summaries of ``data`` that are not written yet (see the module docstring)."""
    with private_files():  # private like the rest of the search directory
        return _write_tensorboard(data)


def _write_tensorboard(data: ReportData) -> TensorBoardWrite:
    log_dir = tensorboard_dir(data.search_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    metric_names = data.metric_names()
    experiment_written = _write_experiment(log_dir, data, metric_names)
    written = already = not_ended = 0
    for trial in data.trials:
        if not trial.status.is_final:
            not_ended += 1
            continue
        run = trial_run_dir(data.search_dir, trial.trial_id)
        if run.is_dir() and any(p.name.endswith(_TRIAL_SUFFIX) for p in run.iterdir()):
            already += 1
            continue
        run.mkdir(parents=True, exist_ok=True)
        _write_events(run, _file_name(trial.created_ts, _TRIAL_SUFFIX), _trial_events(trial))
        written += 1
    log.info(
        "tensorboard: %d trial runs written, %d already, %d not ended", written, already, not_ended
    )
    return TensorBoardWrite(log_dir, written, already, not_ended, experiment_written)


# ------------------------------------------------------------------ the experiment


def experiment_hparams(data: ReportData) -> list[hparams.HParam]:
    """Every hyperparameter with its domain (the space's), then those only trials carry."""
    space = {hp.name: hp for hp in data.space}
    names = data.hyperparameter_names()
    # Keras Tuner's own values (Hyperband's epochs, bracket, round) are shown too:
    # they explain a trial's curves, and the HParams table can hide them.
    for trial in data.trials:
        for name in trial.values:
            if name.startswith(TUNER_PREFIX) and name not in names:
                names.append(name)
    return [hparams.HParam(name, _domain(space.get(name))) for name in names]


def _domain(hp: HyperparameterRow | None) -> hparams.Domain | None:
    if hp is None:
        return None
    if hp.categorical:
        values = [v for v in hp.choices if isinstance(v, (bool, int, float, str))]
        kinds = {type(v) for v in values}
        return hparams.Discrete(values) if values and len(kinds) == 1 else None
    if hp.min_value is None or hp.max_value is None or hp.min_value > hp.max_value:
        return None
    if hp.kind == "Int":
        return hparams.IntInterval(int(hp.min_value), int(hp.max_value))
    return hparams.RealInterval(float(hp.min_value), float(hp.max_value))


def experiment_metrics(data: ReportData, metric_names: Iterable[str]) -> list[hparams.Metric]:
    """The trial's score, then every per-epoch metric (its last epoch's value)."""
    metrics = [
        hparams.Metric(
            SCORE_TAG,
            display_name=f"{data.objective} (trial score)",
            description=f"the trial's {data.objective} as the chief recorded it "
            f"({data.direction}imise)",
        )
    ]
    metrics.extend(hparams.Metric(name) for name in metric_names)
    return metrics


def _write_experiment(log_dir: Path, data: ReportData, metric_names: list[str]) -> bool:
    summary = hparams.hparams_config_pb(
        experiment_hparams(data),
        experiment_metrics(data, metric_names),
        time_created_secs=data.created_at,
    )
    event = event_pb2.Event(wall_time=data.created_at or time.time(), summary=summary)
    digest = hashlib.sha256(event.SerializeToString(deterministic=True)).hexdigest()[:12]
    suffix = f".{digest}{_EXPERIMENT_SUFFIX}"
    existing = [p for p in log_dir.iterdir() if p.name.endswith(_EXPERIMENT_SUFFIX)]
    if any(p.name.endswith(suffix) for p in existing):
        return False
    # A newer file name than the old one: TensorBoard reads a run's files in name order.
    _write_events(log_dir, _file_name(time.time(), suffix), [event])
    for old in existing:
        old.unlink(missing_ok=True)
    return True


# ---------------------------------------------------------------------- a trial


def _trial_events(trial: TrialRow) -> list[event_pb2.Event]:
    start = trial.history[0].ts if trial.history else trial.created_ts
    events = [
        event_pb2.Event(
            wall_time=trial.created_ts,
            summary=hparams.hparams_pb(
                _hparam_values(trial.values), trial_id=trial.trial_id, start_time_secs=start
            ),
        )
    ]
    for report in trial.history:
        values = [
            summary_pb2.Summary.Value(tag=name, simple_value=value)
            for name, value in sorted(report.metrics.items())
        ]
        events.append(
            event_pb2.Event(
                wall_time=report.ts, step=report.epoch, summary=summary_pb2.Summary(value=values)
            )
        )
    end_ts = trial.ended_ts or start
    if trial.score is not None:
        score = summary_pb2.Summary.Value(tag=SCORE_TAG, simple_value=trial.score)
        events.append(
            event_pb2.Event(
                wall_time=end_ts, step=trial.best_step, summary=summary_pb2.Summary(value=[score])
            )
        )
    events.append(event_pb2.Event(wall_time=end_ts, summary=_session_end(trial, end_ts)))
    return events


def _hparam_values(values: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The values TensorBoard can hold (bool, int, float, str); anything else as text."""
    out: dict[str, bool | int | float | str] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _session_end(trial: TrialRow, end_ts: float) -> summary_pb2.Summary:
    status = (
        api_pb2.STATUS_SUCCESS if trial.status is TrialStatus.COMPLETED else api_pb2.STATUS_FAILURE
    )
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end_ts)
    )
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(data),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


# --------------------------------------------------------------------- files


def _file_name(ts: float, suffix: str) -> str:
    # TensorBoard reads files whose name holds "tfevents", in name order.
    return f"events.out.tfevents.{int(ts):010d}.ktc{suffix}"


def _write_events(run_dir: Path, name: str, events: Iterable[event_pb2.Event]) -> None:
    """One event file, written to a hidden name and renamed into place."""
    tmp = run_dir / f".{name}.tmp"
    with open(tmp, "wb") as handle:
        writer = RecordWriter(handle)
        # Every event file starts with its version record, as TensorFlow's writer does.
        header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        writer.write(header.SerializeToString())
        for event in events:
            writer.write(event.SerializeToString())
        handle.flush()
    os.replace(tmp, run_dir / name)
