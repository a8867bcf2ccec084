"""The Keras Tuner side of a worker: the ``Tuner`` subclass that runs each trial.

A stock ``keras_tuner.Tuner`` with four hooks (:func:`ktc_tuner_class`), and
Keras Tuner's best-epoch checkpoint written once per fit
(:func:`save_best_epoch_at_end_class`). Both classes are built on first use, so
importing this module imports neither TensorFlow nor Keras Tuner; the
:class:`~workers.runner.TrialRunner` drives them.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from orchestrator.protocol.failures import TRACEBACK_TAIL_CHARS, strip_ansi
from orchestrator.protocol.trials import AttemptStatus
from workers.failures import ObjectiveNotLoggedError, classify

if TYPE_CHECKING:
    from workers.runner import TrialRunner

_SAVE_BEST: list[type] = []


def save_best_epoch_at_end_class() -> type:
    """Keras Tuner's ``SaveBestEpoch`` with one write per fit (built once: imports Keras Tuner)."""
    if _SAVE_BEST:
        return _SAVE_BEST[0]
    import numpy as np
    from keras_tuner.src.engine import tuner_utils

    class _SaveBestEpochAtEnd(tuner_utils.SaveBestEpoch):  # type: ignore[misc]
        """Keras Tuner's best-epoch checkpoint, written once when training ends.

        Keras Tuner writes the weights file at every improving epoch (about 4 %
        of a digits trial: BENCHMARKS.md, "Inside one trial"). This keeps a copy
        of the best epoch's weights in memory instead and writes the same file
        with Keras Tuner's own writer at the end of each execution's fit, before
        the trial ends and the runner uploads it. Callbacks before it (a user's
        EarlyStopping restoring its best weights) are left as they were.
        """

        _best: list[Any] | None = None

        def _save_model(self) -> None:
            self._best = [np.array(w, copy=True) for w in self.model.get_weights()]

        def on_train_end(self, logs: Any = None) -> None:
            best, self._best = self._best, None
            if best is None:
                return
            current = self.model.get_weights()
            self.model.set_weights(best)
            try:
                super()._save_model()
            finally:
                self.model.set_weights(current)

    _SAVE_BEST.append(_SaveBestEpochAtEnd)
    return _SaveBestEpochAtEnd


def _make_tuner_class() -> type:
    import keras_tuner
    from keras_tuner.src.engine import tuner_utils

    save_best_epoch_at_end = save_best_epoch_at_end_class()

    class _KtcTuner(keras_tuner.Tuner):  # type: ignore[misc]
        """A stock Keras Tuner ``Tuner`` plus four hooks:

        - ``on_epoch_end`` reports each epoch to the chief (renewing the lease)
          and stops training when the chief says stop. A trial scheduler's
          stop then completes the trial with its best epoch so far, like an
          EarlyStopping callback does (the chief alone marks it stopped early);
          any other stop ends the attempt STOPPED (requeued);
        - Hyperband's continuation (``tuner/epochs``, ``tuner/initial_epoch``,
          ``tuner/trial_id``), with the parent's checkpoint fetched from the
          chief when it is not on this machine;
        - no TensorBoard import unless a TensorBoard callback is used;
        - its best-epoch checkpoint is written once per fit, not at every
          improving epoch (:func:`save_best_epoch_at_end_class`).
        """

        runner: TrialRunner | None = None

        def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: Any = None) -> None:
            objective = self.oracle.objective
            if logs is not None and not objective.has_value(logs):
                # Keras Tuner would train to the end, then fail with KeyError.
                raise ObjectiveNotLoggedError(getattr(objective, "name", str(objective)), logs)
            super().on_epoch_end(trial, model, epoch, logs=logs)
            if self.oracle.report_epoch(trial.trial_id, epoch, logs):
                model.stop_training = True

        def run_trial(self, trial: Any, *fit_args: Any, **fit_kwargs: Any) -> Any:
            hp = trial.hyperparameters
            if "tuner/epochs" in hp.values:
                fit_kwargs["epochs"] = hp.values["tuner/epochs"]
                fit_kwargs["initial_epoch"] = hp.values["tuner/initial_epoch"]
            # Keras Tuner's run_trial makes its best-epoch checkpoint from
            # tuner_utils.SaveBestEpoch; for this call, one that writes it once.
            original = tuner_utils.SaveBestEpoch
            tuner_utils.SaveBestEpoch = save_best_epoch_at_end
            try:
                return super().run_trial(trial, *fit_args, **fit_kwargs)
            finally:
                tuner_utils.SaveBestEpoch = original

        def _build_hypermodel(self, hp: Any) -> Any:
            model = super()._build_hypermodel(hp)
            if "tuner/trial_id" in hp.values:
                from keras_tuner.src import utils as kt_utils

                parent = hp.values["tuner/trial_id"]
                if self.runner is not None:
                    self.runner.fetch_parent_checkpoint(self, parent)
                if not model.built:
                    model.build_from_config(
                        kt_utils.load_json(self._get_build_config_fname(parent))
                    )
                model.load_weights(self._get_checkpoint_fname(parent))
            return model

        def _try_run_and_update_trial(self, trial: Any, *fit_args: Any, **fit_kwargs: Any) -> None:
            # Keras Tuner's own version (base_tuner.py) ends every exception
            # INVALID (retried) with the raw traceback as the message, and lets
            # its FatalError escape. Here the runner classifies it
            # (workers/failures.py): the status says whether the chief retries,
            # and the traceback's last line is the error in one line.
            from keras_tuner.src.engine import trial as kt_trial

            try:
                self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
                trial.status = kt_trial.TrialStatus.COMPLETED
                return
            except Exception as exc:
                failure = classify(exc)
                tail = strip_ansi(traceback.format_exc())[-TRACEBACK_TAIL_CHARS:]
                runner = self.runner
                if runner is None:
                    retry = failure.retryable
                else:
                    retry = (
                        runner.on_trial_failure(trial.trial_id, failure) is AttemptStatus.INVALID
                    )
                trial.status = (
                    kt_trial.TrialStatus.INVALID if retry else kt_trial.TrialStatus.FAILED
                )
                trial.message = f"{tail}\n{failure.message}"

        def _configure_tensorboard_dir(
            self, callbacks: Any, trial: Any, execution: int = 0
        ) -> None:
            if any(type(cb).__name__ == "TensorBoard" for cb in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    return _KtcTuner


_TUNER_CLASS: list[type] = []


def ktc_tuner_class() -> type:
    """The KtcTuner class, built on first use so importing this module stays TF-free."""
    if not _TUNER_CLASS:
        _TUNER_CLASS.append(_make_tuner_class())
    return _TUNER_CLASS[0]
