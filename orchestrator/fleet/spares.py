"""Warm spares: a slot's next worker process, started before the current one
finishes its recycle quota, so TensorFlow's import is off the critical path.

A mixin of :class:`~orchestrator.fleet.slots.Fleet`, kept apart so each module
holds one concept (docs/architecture.md, "Warm spares"). Everything here runs
on the fleet's monitor thread, like every other Ray call about actors.

A spare reserves nothing beyond its slot's placement group, touches no GPU and
holds no credential until it takes over (:meth:`_promote_spare`, which hands it
to the fleet's ``_begin_run``). A spare that dies while warming is dropped; a
drained, preempted or retired slot's spare is stopped, never promoted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.config import ClusterSpec, WorkerSlot
from orchestrator.fleet.placement import death_reason
from orchestrator.fleet.slot_table import SlotRuntime, Spare
from orchestrator.protocol.status_document import WorkerState

if TYPE_CHECKING:
    from orchestrator.fleet.slot_table import SlotTable

log = logging.getLogger(__name__)


class FleetSpares:
    """Starting, warming, promoting and dropping spares (see the module docstring)."""

    # Provided by Fleet.
    _slots: SlotTable
    _tensorflow: bool | None
    _spare_lead: int
    hooks: Any  # BrokerHooks
    dataset_ref: Any
    make_config: Callable[[WorkerSlot, str], Any]

    @property
    def cluster(self) -> ClusterSpec:
        raise NotImplementedError  # Fleet's

    def _create_process(self, rt: SlotRuntime) -> tuple[Any, int]:
        raise NotImplementedError  # Fleet's

    def _begin_run(self, rt: SlotRuntime, info: dict[str, Any]) -> None:
        raise NotImplementedError  # Fleet's

    # ---------------------------------------------------------------- policy

    def _spares_on(self) -> bool:
        fleet = self.cluster.fleet
        return fleet.warm_spares and fleet.recycle_after_trials > 0

    @staticmethod
    def _takes_spares(rt: SlotRuntime, starting: bool) -> bool:
        """Whether the slot may have a spare: still wanted, neither dead nor
        draining, while trials are still to start."""
        return starting and rt.wanted and rt.state not in (WorkerState.DEAD, WorkerState.DRAINING)

    def _spare_wanted(self, rt: SlotRuntime, starting: bool) -> bool:
        """Whether the slot keeps the spare it has (one of its current shape)."""
        return (
            rt.spare is not None and rt.spare.slot == rt.slot and self._takes_spares(rt, starting)
        )

    def _needs_tensorflow(self) -> bool:
        if self._tensorflow is None:
            from workers.hypermodels import needs_tensorflow

            any_slot = next(iter(self._slots)).slot
            self._tensorflow = needs_tensorflow(self.make_config(any_slot, "").search.hypermodel)
        return self._tensorflow

    # ------------------------------------------------------------ lifecycle

    def _start_spare(self, rt: SlotRuntime) -> None:
        """Start the slot's next process now, during the current one's last trial."""
        actor, incarnation = self._create_process(rt)
        rt.spare = Spare(
            actor=actor,
            slot=rt.slot,
            incarnation=incarnation,
            info_ref=actor.info.remote(),
            warm_ref=actor.warm.remote(self._needs_tensorflow(), [self.dataset_ref]),
        )
        log.info("warming a spare for %s (incarnation %d)", rt.worker_id, incarnation)

    def _promote_spare(self, rt: SlotRuntime) -> None:
        """The slot's process is gone: its spare takes over (warm, or still warming)."""
        spare = rt.spare
        assert spare is not None
        rt.spare = None
        rt.actor = spare.actor
        rt.incarnation = spare.incarnation
        rt.run_ref = None
        rt.due_ref = None
        rt.created_at = time.monotonic()
        rt.pending_reason = None
        rt.preempt = False
        log.info(
            "spare for %s takes over (incarnation %d, %s)",
            rt.worker_id,
            rt.incarnation,
            "warm" if spare.warm else "still warming",
        )
        if not spare.warm and self._spare_lead < self.cluster.fleet.recycle_after_trials:
            # Trials are shorter than a spare's warm-up here: start the next
            # spares one trial earlier.
            self._spare_lead += 1
            log.info("spares now start %d trial(s) before a recycle", self._spare_lead)
        if spare.info is not None:
            self._begin_run(rt, spare.info)
        else:
            rt.info_ref = spare.info_ref
            rt.state = WorkerState.STARTING

    def _drop_spare(self, rt: SlotRuntime, why: str) -> None:
        import ray

        spare = rt.spare
        rt.spare = None
        if spare is not None:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(spare.actor, no_restart=True)
            log.info("spare for %s stopped: %s", rt.worker_id, why)

    # ------------------------------------------------------ the monitor's refs

    def _on_recycle_due(self, rt: SlotRuntime, ref: Any) -> None:
        """The process started one of its last trials before a recycle: warm its spare."""
        import ray

        rt.due_ref = None
        try:
            due = ray.get(ref, timeout=5)
        except Exception:  # the process died: its run_ref says so
            due = False
        if (
            due
            and rt.spare is None
            and self._spares_on()
            and self._takes_spares(rt, self.hooks.trials_to_start())
        ):
            self._start_spare(rt)

    def _on_spare_ready(self, rt: SlotRuntime, ref: Any) -> None:
        """One of the spare's calls answered: it is placed (``info``) or warm."""
        import ray

        spare = rt.spare
        assert spare is not None
        try:
            value = ray.get(ref, timeout=5)
        except Exception as exc:
            self._drop_spare(rt, f"died while warming: {death_reason(exc)}")
            return
        if ref == spare.info_ref:
            spare.info_ref = None
            spare.info = value
        else:
            spare.warm_ref = None
            spare.warm = True
