"""RemoteOracle: Keras Tuner's Oracle interface, answered by a ktcluster chief.

A stock ``keras_tuner.Tuner`` (or any subclass, e.g. ``Hyperband``) runs its
trials against the chief once its oracle is swapped for this one, just as Keras
Tuner's own distributed mode swaps in its ``OracleClient``::

    tuner = keras_tuner.RandomSearch(build_model, objective="val_accuracy", ...)
    RemoteOracle.attach(tuner, TrialClient(address, token, worker_id="w0"))
    tuner.search(x, y, validation_data=(xv, yv), epochs=5)

It subclasses ``keras_tuner.Oracle`` only so ``BaseTuner``'s isinstance check
passes; every decision is the chief's. While a trial runs, a
:class:`~orchestrator.protocol.lease_keeper.LeaseKeeper` renews its lease in the background.

What a Keras Tuner user reads from ``tuner.oracle`` stays what Keras Tuner's own
oracle would give (its own tuner tests judge it: ``make kt-suite``):

- ``hyperparameters`` is the search space as far as this worker knows it: the
  tuner's at ``attach``, grown by every trial it is given, builds and ends.
  New entries are checked here as Keras Tuner checks them
  (``allow_new_entries=False`` raises its RuntimeError) before the chief sees them.
- ``trials`` holds the trials this worker ran, with status, metrics and score
  as Keras Tuner's ``end_trial`` leaves them; ``get_best_trials`` and
  ``remaining_trials()`` answer for the whole search, from the chief.
- When the chief ends the search FAILED (its consecutive-failure limit),
  ``create_trial`` raises Keras Tuner's RuntimeError, so ``search()`` does not
  return as if it had succeeded. A worker runner that reports the stop itself
  passes ``raise_on_failed_search=False``.
- ``save()`` writes a Keras Tuner ``oracle.json`` that the replaced oracle's
  class can reload, so a second tuner built on the same project directory with
  Keras Tuner's default ``overwrite=False`` starts instead of crashing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras_tuner
from keras_tuner.src.engine import trial as kt_trial

from orchestrator.errors import (
    ChiefUnavailableError,
    KtClusterError,
    SearchFailedError,
    StaleLeaseError,
)
from orchestrator.protocol.client import (
    AssignmentKind,
    LeasedTrial,
    ReportAction,
    TrialClient,
    TrialSummary,
)
from orchestrator.protocol.failures import TRACEBACK_TAIL_CHARS
from orchestrator.protocol.kt_state import hyperparameters_from_config, trial_from_state
from orchestrator.protocol.lease_keeper import LeaseKeeper
from orchestrator.protocol.metrics import build_objective, register_metrics
from orchestrator.protocol.protos import ktcluster_pb2 as pb

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec

log = logging.getLogger(__name__)


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
        raise_on_failed_search: bool = True,
    ) -> None:
        super().__init__(objective=objective, max_trials=max_trials)
        self.client = client
        self.wait_s = wait_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.raise_on_failed_search = raise_on_failed_search
        self._display.verbose = 0
        self._leases: dict[str, LeasedTrial] = {}
        self._keepers: dict[str, LeaseKeeper] = {}
        self._final: dict[str, tuple[dict[str, float], int]] = {}
        self.stop_reason: str = ""
        self._told_to_stop: set[str] = set()
        # The state of the oracle attach() replaced, as its class writes it: the
        # keys of its own (Hyperband's brackets...) that save() must keep so that
        # class can reload oracle.json.
        self._replaced_state: dict[str, Any] = {}

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
        (which the tuner's constructor already populated) with the chief.

        What the tuner's oracle already holds carries over: its space, its
        ``allow_new_entries``/``tune_new_entries``, and the trials a reload
        found in the project directory."""
        local = tuner.oracle
        remote = cls(client, objective=local.objective, max_trials=local.max_trials, **kwargs)
        remote._set_project_dir(tuner.directory, tuner.project_name)
        remote.allow_new_entries = local.allow_new_entries
        remote.tune_new_entries = local.tune_new_entries
        # The same object, as Keras Tuner's oracle keeps the HyperParameters a
        # user passed in: the user's `hp` is the space, and grows with it.
        remote.hyperparameters = local.hyperparameters
        remote._adopt(local)
        if local.hyperparameters.space:
            client.update_space(local.get_space().get_config())
        tuner.oracle = remote
        return remote

    def _adopt(self, local: Any) -> None:
        # Copies, not the objects: the replaced oracle may live on (a test may
        # host it in a chief in this very process).
        self._replaced_state = json.loads(json.dumps(local.get_state()))
        for trial_id, trial in local.trials.items():
            self.trials[trial_id] = trial_from_state(trial.get_state())
        self.start_order = list(local.start_order)
        self.end_order = list(local.end_order)
        self._run_times.update(local._run_times)
        self._tried_so_far = set(local._tried_so_far)
        self._id_to_hash.update(local._id_to_hash)

    # ------------------------------------------------------------- trials

    def create_trial(self, tuner_id: str) -> kt_trial.Trial:
        assignment = self.client.create_trial(self.wait_s)
        if assignment.kind is AssignmentKind.STOP:
            self.stop_reason = assignment.reason
            if self.raise_on_failed_search:
                self._raise_if_search_failed()
            # Local copy: the chief may already be gone once it has said STOP.
            return kt_trial.Trial(self.hyperparameters.copy(), status=kt_trial.TrialStatus.STOPPED)
        if assignment.kind is AssignmentKind.WAIT or assignment.trial is None:
            # KT's search loop calls again at once: the chief's long-poll paces it.
            return kt_trial.Trial(self.hyperparameters.copy(), status=kt_trial.TrialStatus.IDLE)
        leased = assignment.trial
        trial = trial_from_state(leased.trial_state)
        trial.status = kt_trial.TrialStatus.RUNNING
        # The chief's space as of this trial: entries other workers found too.
        self._learn_space(trial.hyperparameters)
        if trial.trial_id not in self.trials:
            self.start_order.append(trial.trial_id)
        self.trials[trial.trial_id] = trial
        self._record_values(trial)
        self._leases[trial.trial_id] = leased
        keeper = LeaseKeeper(self.client, leased, self.heartbeat_interval_s)
        self._keepers[trial.trial_id] = keeper.__enter__()
        return trial

    def _raise_if_search_failed(self) -> None:
        """Raise SearchFailedError when the chief ended the search FAILED."""
        try:
            state = self.client.search_state()
        except KtClusterError as exc:  # gone since it said STOP: nothing more to learn
            log.warning("could not ask the chief why the search stopped: %s", exc)
            return
        if state.state == pb.SEARCH_FAILED:
            raise SearchFailedError(
                f"the chief at {self.client.address} ended the search FAILED: {state.message}"
            )

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
        """Report an epoch's metrics; True when the chief says stop.

        A trial scheduler's stop (``ReportAction.STOP_EARLY``) only stops
        training: the trial then completes as usual, with the best epoch's
        metrics (Keras Tuner's own choice of best step), and the chief marks it
        stopped early. Any other stop ends the attempt STOPPED (requeued)."""
        keeper = self._keepers.get(trial_id)
        if keeper is None:
            return False
        metrics = finite_metrics(logs or {})
        try:
            action = keeper.report(epoch, metrics)
        except StaleLeaseError as exc:
            log.warning("trial %s: %s", trial_id, exc)
            self._told_to_stop.add(trial_id)
            return True
        if action is ReportAction.STOP_EARLY:
            return True
        if action is ReportAction.STOP or self.stop_requested(trial_id):
            self._told_to_stop.add(trial_id)
            return True
        return False

    def update_trial(self, trial_id: str, metrics: Mapping[str, Any], step: int = 0) -> Any:
        """Keep the metrics locally; they travel with end_trial."""
        trial = self.trials[trial_id]
        self._check_objective_found(metrics)  # Keras Tuner's own check and message
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
        recorded = self.client.end_attempt(
            leased,
            status,
            metrics=finite_metrics(metrics) if status == "COMPLETED" else {},
            best_step=step,
            error_message=message,
            traceback_tail=tail,
            trial_state={"hyperparameters": trial.hyperparameters.get_config()},
        )
        if recorded:
            self._record_end(trial, status, metrics, step)

    def _record_end(
        self, trial: kt_trial.Trial, status: str, metrics: Mapping[str, float], step: int
    ) -> None:
        """Leave the local trial as Keras Tuner's end_trial leaves it: final
        status, score and best step (the ones the chief recorded), the space
        grown by what the build registered, and its trial.json written."""
        local = self.trials.setdefault(trial.trial_id, trial)
        if local is not trial:  # KT's end_trial syncs the caller's copy the same way
            local.hyperparameters = trial.hyperparameters
            local.message = trial.message
        if status == "STOPPED":
            return  # requeued by the chief: its result comes from a later attempt
        if status == "COMPLETED":
            local.status = kt_trial.TrialStatus.COMPLETED
            local.score = float(metrics[self.objective.name])
            local.best_step = step
        else:
            local.status = self._final_failure_status(trial.trial_id)
        self._run_times[trial.trial_id] += 1
        if local.status != kt_trial.TrialStatus.INVALID:
            self.end_order.append(trial.trial_id)
        self._record_values(local)
        if self._has_project_dir():
            self._save_trial(local)
        # Last, as KT's end_trial does: allow_new_entries=False raises its RuntimeError.
        keras_tuner.Oracle.update_space(self, local.hyperparameters)

    def _final_failure_status(self, trial_id: str) -> str:
        """FAILED when the chief gave up on the trial, INVALID while it retries it."""
        try:
            summary = self.client.get_trial(trial_id)
        except KtClusterError as exc:
            log.warning("trial %s: could not read its status back: %s", trial_id, exc)
            return str(kt_trial.TrialStatus.FAILED)
        if summary.status == "FAILED":
            return str(kt_trial.TrialStatus.FAILED)
        return str(kt_trial.TrialStatus.INVALID)

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
        """The chief's space (a copy, as Keras Tuner's get_space returns)."""
        hp = hyperparameters_from_config(self.client.get_space())
        self._learn_space(hp)
        return hp

    def update_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        # Keras Tuner's own merge first: it refuses new entries when
        # allow_new_entries is False, with its RuntimeError, before the chief sees them.
        keras_tuner.Oracle.update_space(self, hyperparameters)
        self.client.update_space(hyperparameters.get_config())

    def _learn_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        """Merge entries the chief already accepted (no checks: they are its space)."""
        new = [
            hp
            for hp in hyperparameters.space
            if not self.hyperparameters._exists(hp.name, hp.conditions)
        ]
        if new:
            self.hyperparameters.merge(new)

    # -------------------------------------------------------------- reads

    def get_trial(self, trial_id: str) -> kt_trial.Trial:
        if trial_id in self.trials:
            return self.trials[trial_id]
        return _to_kt_trial(self.client.get_trial(trial_id))

    def get_best_trials(self, num_trials: int = 1) -> list[kt_trial.Trial]:
        return [_to_kt_trial(s) for s in self.client.get_best_trials(num_trials)]

    def remaining_trials(self) -> int | None:
        """``max_trials`` minus the trials the search has created so far (all
        workers'), as Keras Tuner counts them; None without a cap."""
        if not self.max_trials:
            return None
        try:
            created = sum(self.client.search_state().trials_by_status.values())
        except ChiefUnavailableError:  # the search is over and its chief gone
            created = len(self.trials)
        return max(int(self.max_trials) - created, 0)

    # -------------------------------------------------------- persistence

    def save(self) -> None:
        """Write a Keras Tuner oracle.json to the project directory.

        The chief's ledger is the search's state; this file exists because
        ``BaseTuner`` reloads a project it finds (``overwrite=False``, the
        default) through the oracle its constructor built, and that oracle's
        ``reload`` needs it. It holds what this worker knows (space, its
        trials' order and hashes) over the replaced oracle's own keys.
        """
        if not self._has_project_dir():
            return
        state = {**self._replaced_state, **keras_tuner.Oracle.get_state(self)}
        path = Path(self._get_oracle_fname())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)  # workers sharing a project directory never see half a file

    def reload(self) -> None:
        """Nothing to reload: the chief holds the search."""

    def _has_project_dir(self) -> bool:
        # Set by BaseTuner through _set_project_dir; a RemoteOracle used without
        # a tuner has no directory to write to.
        return getattr(self, "_directory", None) is not None


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
