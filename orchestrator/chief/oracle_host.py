"""The oracle host: the one Keras Tuner oracle, behind a lock that cannot leak.

Keras Tuner's ``@synchronized`` takes a per-oracle lock with no try/finally,
so an exception inside ``create_trial`` leaves it held and hangs every later
caller. Every call here goes through :meth:`OracleHost._guard`, which holds our
own lock with ``with`` and, in ``finally``, releases KT's lock if the call
leaked it.

The host also turns off what makes KT slow or unsafe on a chief: the O(n)
oracle.json rewrite per trial, per-trial JSON files, and the consecutive
failure check that raises inside ``end_trial``. The ledger replaces them.

Only the oracle's *decision* state is snapshotted (seed state, Hyperband
brackets, the grid cursor): everything else (trials, hashes, start and end
order) is rebuilt from the ledger's events, so a snapshot costs O(1) for
random, Bayesian and Hyperband searches (O(grid size) for grid).
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.chief.oracles import build_oracle, close_oracle
from orchestrator.protocol.kt_state import (
    canonical_json,
    hyperparameters_from_config,
    trial_from_state,
)
from orchestrator.protocol.metrics import register_metrics

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec

T = TypeVar("T")

# The tuner id we pass to KT. create_trial() files the new trial under it in
# ongoing_trials; we re-key the entry to the trial id at once, so the next call
# with the same id gets a new trial (KT returns the ongoing one otherwise).
_CALLER_ID = "__ktcluster__"


class CreateOutcome(str, Enum):
    """What the oracle answered to create_trial."""

    RUNNING = "RUNNING"  # a new trial
    IDLE = "IDLE"  # waiting for running trials (Hyperband round, grid)
    STOPPED = "STOPPED"  # exhausted or max_trials reached


@dataclass(frozen=True)
class CreatedTrial:
    """A trial the oracle just decided."""

    outcome: CreateOutcome
    trial_id: str | None = None
    trial_state: dict[str, Any] | None = None  # keras_tuner Trial.get_state()
    values: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None  # decision state right after this create


@dataclass(frozen=True)
class RestoredTrial:
    """A trial as the ledger knows it, for :meth:`OracleHost.restore`."""

    trial_id: str
    trial_state: dict[str, Any]
    final_status: str | None  # "COMPLETED", "FAILED" or None while unfinished
    metrics: Mapping[str, float]
    best_step: int
    message: str | None


class OracleHost:
    """Owns the oracle. Thread-safe: each method holds the host lock."""

    def __init__(self, search: SearchSpec, *, initial_space: Any = None) -> None:
        self.search = search
        self.oracle = build_oracle(search, hyperparameters=None, offload_gp=True)
        self._lock = threading.Lock()
        self._applied_ends = 0
        self._disable_kt_persistence()
        if initial_space is not None:
            self.oracle.update_space(initial_space)

    # ------------------------------------------------------------- guarding

    def _disable_kt_persistence(self) -> None:
        oracle = self.oracle
        oracle.save = lambda *a, **k: None
        oracle._save_trial = lambda *a, **k: None
        # Ours counts consecutive failures in O(1); KT's walks every trial and raises.
        oracle._check_consecutive_failures = lambda *a, **k: None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            finally:
                self._release_leaked_kt_lock()

    def _release_leaked_kt_lock(self) -> None:
        from keras_tuner.src.engine import oracle as kt_oracle

        me = threading.current_thread().name
        if kt_oracle.THREADS.get(self.oracle) == me:
            kt_oracle.THREADS[self.oracle] = None
            kt_oracle.LOCKS[self.oracle].release()

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(oracle)`` under the guard (for reads such as get_best_trials)."""
        with self._guard():
            return fn(self.oracle)

    # ---------------------------------------------------------------- calls

    def create_trial(self) -> CreatedTrial:
        """Ask the oracle for a new trial. May be slow (a Bayesian GP fit)."""
        from keras_tuner.src.engine import trial as kt_trial

        with self._guard():
            trial = self.oracle.create_trial(_CALLER_ID)
            status = trial.status
            if status == kt_trial.TrialStatus.RUNNING:
                self.oracle.ongoing_trials.pop(_CALLER_ID, None)
                self.oracle.ongoing_trials[trial.trial_id] = trial
                return CreatedTrial(
                    CreateOutcome.RUNNING,
                    trial_id=trial.trial_id,
                    # Plain JSON types, as the ledger and the wire carry it.
                    trial_state=json.loads(canonical_json(trial.get_state())),
                    values=dict(trial.hyperparameters.values),
                    snapshot=self._snapshot_locked(),
                )
            if status == kt_trial.TrialStatus.STOPPED:
                return CreatedTrial(CreateOutcome.STOPPED)
            return CreatedTrial(CreateOutcome.IDLE)

    def end_trial(
        self,
        trial_id: str,
        *,
        completed: bool,
        metrics: Mapping[str, float],
        best_step: int,
        message: str | None,
        hyperparameters_config: dict[str, Any] | None = None,
    ) -> float | None:
        """Record a trial's final outcome; returns the oracle's score."""
        with self._guard():
            self._end_trial_locked(
                trial_id,
                completed=completed,
                metrics=metrics,
                best_step=best_step,
                message=message,
                hyperparameters_config=hyperparameters_config,
            )
            self._applied_ends += 1
            return self.oracle.trials[trial_id].score  # type: ignore[no-any-return]

    def _end_trial_locked(
        self,
        trial_id: str,
        *,
        completed: bool,
        metrics: Mapping[str, float],
        best_step: int,
        message: str | None,
        hyperparameters_config: dict[str, Any] | None,
    ) -> None:
        from keras_tuner.src.engine import trial as kt_trial

        trial = self.oracle.trials[trial_id]
        if hyperparameters_config:
            trial.hyperparameters = hyperparameters_from_config(hyperparameters_config)
        if completed:
            register_metrics(trial, self.oracle.objective, metrics)
            self.oracle.update_trial(trial_id, dict(metrics), step=best_step)
            trial.status = kt_trial.TrialStatus.COMPLETED
        else:
            trial.status = kt_trial.TrialStatus.FAILED
        trial.message = message
        self.oracle.end_trial(trial)

    def update_space(self, hyperparameters_config: dict[str, Any]) -> bool:
        """Merge new hyperparameters; True when the space grew."""

        with self._guard():
            before = len(self.oracle.hyperparameters.space)
            self.oracle.update_space(hyperparameters_from_config(hyperparameters_config))
            return len(self.oracle.hyperparameters.space) != before

    def space_size(self) -> int:
        """How many hyperparameters the space holds."""
        with self._guard():
            return len(self.oracle.hyperparameters.space)

    def space_config(self) -> dict[str, Any]:
        with self._guard():
            return json.loads(canonical_json(self.oracle.get_space().get_config()))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the oracle's helper process, if it has one. Reads still work after."""
        close_oracle(self.oracle)

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """The oracle's decision state, to store beside the event that changed it."""
        with self._guard():
            return self._snapshot_locked()

    def _snapshot_locked(self) -> dict[str, Any]:
        oracle = self.oracle
        state: dict[str, Any] = {
            "type": self.search.oracle.type,
            "seed": oracle.seed,
            "seed_state": oracle._seed_state,
            "applied_ends": self._applied_ends,
        }
        kind = self.search.oracle.type
        if kind == "hyperband":
            state["brackets"] = oracle._brackets
            state["current_bracket"] = oracle._current_bracket
            state["current_iteration"] = oracle._current_iteration
        elif kind == "bayesian":
            # The GP's candidate sampling draws from this generator; without it a
            # resumed search would propose different points than an uninterrupted one.
            name, keys, pos, has_gauss, cached = oracle._random_state.get_state()
            state["bayes_rng"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
        elif kind == "grid":
            ids = oracle._ordered_ids
            state["grid_memory"] = list(ids._memory)
            # KT keys the list head under None: keep the pairs, not a JSON object.
            state["grid_next_index"] = [[k, v] for k, v in ids._next_index.items()]
            state["grid_last_index"] = ids._last_index
            state["grid_populate_next"] = list(oracle._populate_next)
        return state

    def restore(
        self,
        *,
        space_config: dict[str, Any] | None,
        trials: Sequence[RestoredTrial],
        end_order: Sequence[str],
        snapshot: dict[str, Any] | None,
    ) -> None:
        """Rebuild the oracle from the ledger: trials in start order, then the
        decision snapshot, then the ends the snapshot had not seen yet."""
        from keras_tuner.src.engine import trial as kt_trial

        with self._guard():
            oracle = self.oracle
            if space_config:
                oracle.hyperparameters = hyperparameters_from_config(space_config)
            for restored in trials:
                trial = trial_from_state(restored.trial_state)
                oracle.trials[trial.trial_id] = trial
                oracle.start_order.append(trial.trial_id)
                oracle._record_values(trial)
                if restored.final_status is None:
                    trial.status = kt_trial.TrialStatus.RUNNING
                    oracle.ongoing_trials[trial.trial_id] = trial
            by_id = {t.trial_id: t for t in trials}
            for trial_id in end_order:
                restored = by_id[trial_id]
                trial = oracle.trials[trial_id]
                if restored.final_status == "COMPLETED":
                    register_metrics(trial, oracle.objective, restored.metrics)
                    for name, value in restored.metrics.items():
                        trial.metrics.update(name, value, step=restored.best_step)
                    trial.status = kt_trial.TrialStatus.COMPLETED
                    oracle.score_trial(trial)
                else:
                    trial.status = kt_trial.TrialStatus.FAILED
                trial.message = restored.message
                oracle.end_order.append(trial_id)
                oracle._run_times[trial_id] += 1
            self._applied_ends = len(end_order)
            if snapshot is not None:
                self._apply_snapshot_locked(snapshot, end_order)

    def _apply_snapshot_locked(self, snapshot: dict[str, Any], end_order: Sequence[str]) -> None:
        oracle = self.oracle
        oracle.seed = snapshot["seed"]
        oracle._seed_state = snapshot["seed_state"]
        kind = snapshot.get("type")
        if kind == "hyperband":
            oracle._brackets = snapshot["brackets"]
            oracle._current_bracket = snapshot["current_bracket"]
            oracle._current_iteration = snapshot["current_iteration"]
        elif kind == "bayesian" and "bayes_rng" in snapshot:
            import numpy as np

            name, keys, pos, has_gauss, cached = snapshot["bayes_rng"]
            oracle._random_state.set_state(
                (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
            )
        elif kind == "grid":
            ids = oracle._ordered_ids
            ids._memory = list(snapshot["grid_memory"])
            ids._data_to_index = {data: i for i, data in enumerate(ids._memory)}
            ids._next_index = collections.defaultdict(lambda: None)
            ids._next_index.update({k: v for k, v in snapshot["grid_next_index"]})
            ids._last_index = snapshot["grid_last_index"]
            # Grid's end_trial queues the trial for its next combination; the
            # ends applied after the snapshot must be queued again.
            unseen_ends = list(end_order[int(snapshot.get("applied_ends", 0)) :])
            oracle._populate_next = list(snapshot["grid_populate_next"]) + unseen_ends

    # ----------------------------------------------------------------- reads

    @property
    def objective_name(self) -> str:
        return str(self.oracle.objective.name)

    @property
    def direction(self) -> str:
        return str(self.oracle.objective.direction)
