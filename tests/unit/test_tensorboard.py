"""TensorBoard summaries from the ledger, read back with TensorBoard's own reader.

The event files are read with ``EventAccumulator`` and the HParams plugin's own
parsers, and compared with the ledger's events: each ended trial's per-epoch
scalars and score, its session (hyperparameter values, end status), and the
experiment (every hyperparameter's domain, the metrics).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from bench.report_speed import build_synthetic_search
from orchestrator.chief.events import TrialCompleted, TrialFailed, TrialProgress
from orchestrator.chief.ledger import Ledger
from orchestrator.report.data import read_report_data
from orchestrator.report.tensorboard import SCORE_TAG, trial_run_dir, write_tensorboard
from tests.helpers import readable_by_others

TRIALS, EPOCHS, RUNNING = 12, 4, 1


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tensorboard") / "search"
    build_synthetic_search(path, trials=TRIALS, epochs=EPOCHS, running=RUNNING, fail_every=5)
    write_tensorboard(read_report_data(path))
    return path


def _events(search_dir: Path) -> list[Any]:
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        return [r.event for r in ledger.events()]


def _loaded(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _scalar(value: float) -> float:
    # Scalars travel as 32-bit floats.
    return pytest.approx(value, rel=1e-6)  # type: ignore[no-any-return]


def test_the_summaries_are_private_like_the_search_directory(search_dir: Path) -> None:
    assert not readable_by_others(search_dir / "tensorboard")


def test_each_ended_trial_has_its_epoch_scalars_and_score(search_dir: Path) -> None:
    events = _events(search_dir)
    ends = {e.trial_id: e for e in events if isinstance(e, (TrialCompleted, TrialFailed))}
    progress: dict[str, dict[int, dict[str, float]]] = {}
    for e in events:
        if isinstance(e, TrialProgress):
            progress.setdefault(e.trial_id, {})[e.epoch] = e.metrics
    runs = sorted(p.name for p in (search_dir / "tensorboard").iterdir() if p.is_dir())
    assert runs == sorted(f"trial_{tid}" for tid in ends)  # not the running one
    for trial_id, end in ends.items():
        acc = _loaded(trial_run_dir(search_dir, trial_id))
        epochs = progress.get(trial_id, {})
        names = {name for metrics in epochs.values() for name in metrics}
        expected_tags = names | ({SCORE_TAG} if isinstance(end, TrialCompleted) else set())
        assert set(acc.Tags()["scalars"]) == expected_tags
        for name in names:
            got = [(s.step, s.value) for s in acc.Scalars(name)]
            want = [(e, epochs[e][name]) for e in sorted(epochs) if name in epochs[e]]
            assert [s for s, _ in got] == [s for s, _ in want]
            assert [v for _, v in got] == [_scalar(v) for _, v in want]
        if isinstance(end, TrialCompleted):
            (score,) = acc.Scalars(SCORE_TAG)
            assert (score.step, score.value) == (end.best_step, _scalar(end.score))


def test_each_trial_is_an_hparams_session_with_its_values_and_status(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    for trial in data.trials:
        if not trial.status.is_final:
            continue
        content = _loaded(trial_run_dir(search_dir, trial.trial_id)).PluginTagToContent(
            metadata.PLUGIN_NAME
        )
        start = metadata.parse_session_start_info_plugin_data(
            content[metadata.SESSION_START_INFO_TAG]
        )
        got = {}
        for name, value in start.hparams.items():
            kind = value.WhichOneof("kind")
            got[name] = getattr(value, kind)
        assert got == pytest.approx(dict(trial.values))
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        want = (
            api_pb2.STATUS_SUCCESS if trial.status.value == "COMPLETED" else api_pb2.STATUS_FAILURE
        )
        assert end.status == want
        assert end.end_time_secs == pytest.approx(trial.ended_ts)


def test_the_experiment_holds_every_hyperparameter_and_metric(search_dir: Path) -> None:
    content = _loaded(search_dir / "tensorboard").PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert list(infos) == ["learning_rate", "units", "activation", "batch_norm"]
    assert (
        infos["learning_rate"].domain_interval.min_value,
        infos["learning_rate"].domain_interval.max_value,
    ) == (1e-4, 1e-1)
    assert (infos["units"].domain_interval.min_value, infos["units"].domain_interval.max_value) == (
        16,
        256,
    )
    assert {v.string_value for v in infos["activation"].domain_discrete.values} == {
        "relu",
        "tanh",
        "gelu",
    }
    assert {v.bool_value for v in infos["batch_norm"].domain_discrete.values} == {False, True}
    tags = [m.name.tag for m in experiment.metric_infos]
    assert tags == [SCORE_TAG, "accuracy", "val_accuracy", "loss", "val_loss"]


def test_a_second_write_adds_only_what_is_new(search_dir: Path) -> None:
    again = write_tensorboard(read_report_data(search_dir))
    assert (again.written, again.not_ended, again.experiment_written) == (0, RUNNING, False)
    assert again.already == TRIALS


def test_no_tensorflow_is_imported() -> None:
    # Run in a fresh interpreter: this test process may have imported TF already.
    import subprocess

    code = (
        "import sys, orchestrator.report.tensorboard, orchestrator.report.build; "
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
