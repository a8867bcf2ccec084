"""A quiet terminal (issue 14.11): TensorFlow's native start-up lines stay off
``ktc``'s stderr unless ``-v``, and ``--no-progress`` prints one line per
finished trial.

TensorFlow writes its noise from C++ to fd 2 before Python logging exists, so
the check runs the real ``ktc`` in a subprocess and reads its stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.quiet_terminal import filter_noise, is_noise
from orchestrator.cli.render import trial_end_line
from orchestrator.cli.session_cli import EndedTrials
from orchestrator.protocol.trials import TrialStatus, TrialView

KTC = Path(sys.executable).parent / "ktc"
REPO = Path(__file__).resolve().parents[2]

# As TF 2.21 printed them on this machine (CPU only).
TF_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796053859.491670    9998 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results.\n",
    "I0000 00:00:1796053859.491973    9998 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "E0000 00:00:1796053862.129418    9998 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
NOISE_WORDS = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "INFO worker.py")


def test_noise_lines_are_dropped_and_the_rest_kept() -> None:
    assert all(is_noise(line) for line in TF_NOISE)
    kept = "UserWarning: something the user should see\n"
    assert filter_noise("".join(TF_NOISE[:2]) + kept + TF_NOISE[3]) == kept
    assert not is_noise("2026-11-30 15:51:47,579 WARNING orchestrator.chief.lifecycle: x\n")


def _validate(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_model.py").write_text(
        textwrap.dedent(
            """\
            import keras
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe (cuInit) runs here


            def build_model(hp):
                return keras.Sequential([keras.layers.Dense(10, activation="softmax")])
            """
        )
    )
    (tmp_path / "search.yaml").write_text(
        "kind: search\nname: quiet\nhypermodel: {name: 'my_model:build_model'}\n"
        "dataset: {source: digits}\nobjective: val_accuracy\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GRPC_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [str(KTC), *flags, "validate", "search.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "verbose", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["quiet", "-v"]
)
def test_validate_of_a_user_module_keeps_tensorflow_quiet(tmp_path: Path, verbose: bool) -> None:
    proc = _validate(tmp_path, *(["-v"] if verbose else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    noisy = [word for word in NOISE_WORDS if word in proc.stderr]
    if verbose:
        # The same run with -v shows TensorFlow's lines: the quiet run is not
        # quiet because TensorFlow said nothing.
        assert noisy, proc.stderr
    else:
        assert noisy == [], proc.stderr
        assert proc.stderr.strip() == "", proc.stderr


def _view(tid: str, status: TrialStatus, **kw: Any) -> TrialView:
    fields: dict[str, Any] = {
        "trial_id": tid,
        "status": status,
        "attempts": 1,
        "score": None,
        "metrics": {},
        "values": {},
        "worker_id": "local-w0",
        "duration_s": None,
        "error_message": None,
        "traceback_tail": None,
        "current_epoch": None,
        "best_step": 0,
        "trial_state": {},
    }
    fields.update(kw)
    return TrialView(**fields)


def test_one_line_per_finished_trial() -> None:
    done = _view("00", TrialStatus.COMPLETED, score=0.93124, duration_s=12.34)
    failed = _view(
        "01",
        TrialStatus.FAILED,
        attempts=3,
        error_message="ValueError: shapes differ — labels are integers\nsecond line",
    )
    assert trial_end_line(done, "val_accuracy") == "trial 00  COMPLETED  val_accuracy=0.9312  12.3s"
    assert trial_end_line(failed, "val_accuracy") == (
        "trial 01  FAILED  ValueError: shapes differ — labels are integers  attempts=3"
    )


def test_a_trial_the_scheduler_stopped_says_after_how_many_epochs() -> None:
    # current_epoch is Keras' 0-based index of the last epoch reported: 2 -> 3 epochs.
    stopped = _view(
        "04", TrialStatus.COMPLETED, score=0.8715, duration_s=3.4, stopped_early=True,
        current_epoch=2,
    )  # fmt: skip
    assert stopped.epochs_trained == 3 and stopped.to_json()["epochs_trained"] == 3
    assert trial_end_line(stopped, "val_accuracy") == (
        "trial 04  COMPLETED  val_accuracy=0.8715  stopped at epoch 3 by the trial scheduler  3.4s"
    )
    # A ledger from before epochs were kept per trial: no count, still marked.
    unknown = _view("05", TrialStatus.COMPLETED, score=0.5, stopped_early=True)
    assert unknown.epochs_trained is None
    assert trial_end_line(unknown, "val_accuracy") == (
        "trial 05  COMPLETED  val_accuracy=0.5000  stopped early by the trial scheduler"
    )


class _Broker:
    """The broker's ``ended_since``: the trials that ended, in end order."""

    def __init__(self) -> None:
        self.ended: list[TrialView] = []

    def ended_since(self, position: int) -> tuple[list[TrialView], int]:
        return self.ended[position:], len(self.ended)


def test_ended_trials_are_reported_once_in_the_order_they_ended() -> None:
    broker = _Broker()
    ended = EndedTrials(broker)
    assert ended.new() == []
    broker.ended.append(_view("01", TrialStatus.FAILED, error_message="TypeError: x"))
    broker.ended.append(_view("00", TrialStatus.COMPLETED, score=0.5))
    assert [t.trial_id for t in ended.new()] == ["01", "00"]
    assert ended.new() == []
    broker.ended.append(_view("02", TrialStatus.COMPLETED, score=0.7))
    assert [t.trial_id for t in ended.new()] == ["02"]


def test_the_scheduler_line_counts_the_stopped_trials_and_the_epochs_not_trained() -> None:
    from orchestrator.cli.render import scheduler_line
    from tests.helpers import make_search

    asha = make_search(
        {"type": "random", "max_trials": 4}, epochs=9, scheduler={"type": "asha", "grace_epochs": 1}
    )
    trials = [
        _view("00", TrialStatus.COMPLETED, score=0.9, current_epoch=8),  # all 9 epochs
        _view("01", TrialStatus.COMPLETED, score=0.5, stopped_early=True, current_epoch=0),
        _view("02", TrialStatus.COMPLETED, score=0.6, stopped_early=True, current_epoch=2),
        _view("03", TrialStatus.FAILED, error_message="ValueError: x"),
    ]
    # 01 trained 1 epoch of 9 (8 not trained), 02 trained 3 (6 not trained).
    assert scheduler_line(trials, asha) == (
        "trial scheduler (asha): stopped 2 of 3 completed trial(s) early, 14 epoch(s) not trained"
    )
    assert scheduler_line(trials, make_search({"type": "random", "max_trials": 4})) is None
