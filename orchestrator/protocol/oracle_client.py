"""RemoteOracle: Keras Tuner's Oracle interface, answered by a ktcluster chief.

A stock ``keras_tuner.Tuner`` (or any subclass, e.g. ``Hyperband``) runs its
trials against the chief once its oracle is swapped for this one, just as Keras
Tuner's own distributed mode swaps in its ``OracleClient``::

    tuner = keras_tuner.RandomSearch(build_model, objective="val_accuracy", ...)
    RemoteOracle.attach(tuner, TrialClient(address, token, worker_id="w0"))
    tuner.search(x, y, validation_data=(xv, yv), epochs=5)

It subclasses ``keras_tuner.Oracle`` only so ``BaseTuner``'s isinstance check
passes; every decision is the chief's. While a trial runs, a
:class:`~orchestrator.protocol.client.LeaseKeeper` renews its lease in the background.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras_tuner
from keras_tuner.src.engine import trial as kt_trial

from orchestrator.errors import KtClusterError, StaleLeaseError
from orchestrator.protocol.client import (
    AssignmentKind,
    LeasedTrial,
    LeaseKeeper,
    ReportAction,
    TrialClient,
    TrialSummary,
)
from orchestrator.protocol.kt_state import hyperparameters_from_config, trial_from_state
from orchestrator.protocol.metrics import build_objective, register_metrics

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec

log = logging.getLogger(__name__)

TRACEBACK_TAIL_CHARS = 4000


class RemoteOracle(keras_tuner.Oracle):  # type: ignore[misc]
    """The Oracle interface over a :class:`TrialClient`."""

    def __init__(
        self,
        client: TrialClient,
        *,
        objective: Any,
        max_trials: int | None = None,
        wait_s: float = 5.0,
        heartbeat_interval_s: float | None = None,
    ) -> None:
        super().__init__(objective=objective, max_trials=max_trials)
        self.client = client
        self.wait_s = wait_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self._display.verbose = 0
        self._leases: dict[str, LeasedTrial] = {}
        self._keepers: dict[str, LeaseKeeper] = {}
        self._final: dict[str, tuple[dict[str, float], int]] = {}
        self.stop_reason: str = ""
        self._told_to_stop: set[str] = set()

    @classmethod
    def for_search(cls, client: TrialClient, search: SearchSpec, **kwargs: Any) -> RemoteOracle:
        """A RemoteOracle with the search's objective and trial cap: what a worker's
        tuner is built with (the chief alone builds a deciding oracle)."""
        return cls(
            client,
            objective=build_objective(search),
            max_trials=search.oracle.max_trials,
            **kwargs,
        )

    @classmethod
    def attach(cls, tuner: Any, client: TrialClient, **kwargs: Any) -> RemoteOracle:
        """Swap ``tuner``'s oracle for a RemoteOracle and share its search space
        (which the tuner's constructor already populated) with the chief."""
        local = tuner.oracle
        remote = cls(client, objective=local.objective, max_trials=local.max_trials, **kwargs)
        remote._set_project_dir(tuner.directory, tuner.project_name)
        if local.hyperparameters.space:
            client.update_space(local.get_space().get_config())
        tuner.oracle = remote
        return remote

    # ------------------------------------------------------------- trials

    def create_trial(self, tuner_id: str) -> kt_trial.Trial:
        assignment = self.client.create_trial(self.wait_s)
        if assignment.kind is AssignmentKind.STOP:
            self.stop_reason = assignment.reason
            # Local copy: the chief may already be gone once it has said STOP.
            return kt_trial.Trial(self.hyperparameters.copy(), status=kt_trial.TrialStatus.STOPPED)
        if assignment.kind is AssignmentKind.WAIT or assignment.trial is None:
            # KT's search loop calls again at once: the chief's long-poll paces it.
            return kt_trial.Trial(self.hyperparameters.copy(), status=kt_trial.TrialStatus.IDLE)
        leased = assignment.trial
        trial = trial_from_state(leased.trial_state)
        trial.status = kt_trial.TrialStatus.RUNNING
        self.trials[trial.trial_id] = trial
        self._leases[trial.trial_id] = leased
        keeper = LeaseKeeper(self.client, leased, self.heartbeat_interval_s)
        self._keepers[trial.trial_id] = keeper.__enter__()
        return trial

    def leased(self, trial_id: str) -> LeasedTrial:
        """The lease this worker holds for ``trial_id``."""
        try:
            return self._leases[trial_id]
        except KeyError:
            raise KtClusterError(f"this worker holds no lease for trial {trial_id}") from None

    def stop_requested(self, trial_id: str) -> bool:
        """True when the chief asked this trial to stop (heartbeat or report)."""
        keeper = self._keepers.get(trial_id)
        return bool(keeper and keeper.stop_requested.is_set())

    def report_epoch(self, trial_id: str, epoch: int, logs: Mapping[str, Any] | None) -> bool:
        """Report an epoch's metrics; True when the chief says stop."""
        leased = self._leases.get(trial_id)
        if leased is None:
            return False
        metrics = finite_metrics(logs or {})
        try:
            action = self.client.report(leased, epoch, metrics)
        except StaleLeaseError as exc:
            log.warning("trial %s: %s", trial_id, exc)
            self._told_to_stop.add(trial_id)
            return True
        if action is ReportAction.STOP or self.stop_requested(trial_id):
            self._told_to_stop.add(trial_id)
            return True
        return False

    def update_trial(self, trial_id: str, metrics: Mapping[str, Any], step: int = 0) -> Any:
        """Keep the metrics locally; they travel with end_trial."""
        trial = self.trials[trial_id]
        register_metrics(trial, self.objective, metrics)
        for name, value in metrics.items():
            trial.metrics.update(name, value, step=step)
        self._final[trial_id] = ({k: float(v) for k, v in metrics.items()}, int(step))
        return trial

    def end_trial(self, trial: kt_trial.Trial) -> None:
        trial_id = trial.trial_id
        keeper = self._keepers.pop(trial_id, None)
        if keeper is not None:
            keeper.__exit__(None, None, None)
        leased = self._leases.pop(trial_id, None)
        if leased is None:
            log.warning("end_trial for trial %s, which this worker does not hold", trial_id)
            return
        metrics, step = self._final.pop(trial_id, ({}, 0))
        status, message, tail = self._outcome(trial, metrics, keeper)
        if trial_id in self._told_to_stop:
            self._told_to_stop.discard(trial_id)
            status, message, tail = "STOPPED", "stopped by the chief", ""
        try:
            self.client.end_trial(
                leased,
                status,
                metrics=finite_metrics(metrics) if status == "COMPLETED" else {},
                best_step=step,
                error_message=message,
                traceback_tail=tail,
                trial_state={"hyperparameters": trial.hyperparameters.get_config()},
            )
        except StaleLeaseError as exc:
            # The chief gave this attempt to someone else: our result is ignored.
            log.warning("trial %s: result refused: %s", trial_id, exc)

    def _outcome(
        self, trial: kt_trial.Trial, metrics: Mapping[str, float], keeper: LeaseKeeper | None
    ) -> tuple[str, str, str]:
        text = trial.message or ""
        tail = text[-TRACEBACK_TAIL_CHARS:]
        message = _last_line(text)
        if keeper is not None and keeper.stop_requested.is_set() and trial.status != "COMPLETED":
            return "STOPPED", "stopped by the chief", ""
        if trial.status == kt_trial.TrialStatus.COMPLETED:
            value = metrics.get(self.objective.name)
            if value is None or not math.isfinite(float(value)):
                return (
                    "INVALID",
                    f"objective {self.objective.name!r} is {value!r} (not a finite number)",
                    "",
                )
            return "COMPLETED", "", ""
        if trial.status == kt_trial.TrialStatus.FAILED:
            return "FAILED", message or "the trial failed", tail
        return "INVALID", message or "the trial raised an exception", tail

    # -------------------------------------------------------------- space

    def get_space(self) -> keras_tuner.HyperParameters:
        config = self.client.get_space()
        hp = hyperparameters_from_config(config)
        self.hyperparameters = hp.copy()
        return hp

    def update_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        self.client.update_space(hyperparameters.get_config())

    # -------------------------------------------------------------- reads

    def get_trial(self, trial_id: str) -> kt_trial.Trial:
        if trial_id in self.trials:
            return self.trials[trial_id]
        return _to_kt_trial(self.client.get_trial(trial_id))

    def get_best_trials(self, num_trials: int = 1) -> list[kt_trial.Trial]:
        return [_to_kt_trial(s) for s in self.client.get_best_trials(num_trials)]

    def remaining_trials(self) -> None:
        return None

    # KT persistence is the chief's ledger's job.
    def save(self) -> None:
        pass

    def reload(self) -> None:
        pass


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics the chief accepts: numeric and finite (NaN/inf dropped)."""
    clean = {}
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            clean[str(name)] = number
    return clean


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:2000] if lines else ""


def _to_kt_trial(summary: TrialSummary) -> kt_trial.Trial:
    trial = trial_from_state(summary.trial_state)
    trial.score = summary.score
    trial.status = summary.status if summary.status in ("COMPLETED", "FAILED") else "RUNNING"
    return trial
