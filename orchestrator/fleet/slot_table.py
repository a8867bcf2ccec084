"""The fleet's slot bookkeeping: which worker slots exist, which are wanted, and
what each one's actor is doing.

The slots are the cluster spec's (``ClusterSpec.worker_slots()``), grown beyond
the file by scale-ups that repeat its node shapes. No Ray here: the fleet's
monitor thread owns the table, makes every Ray call itself and is the table's
only caller, so the table takes no lock. Other threads see the
:class:`~orchestrator.protocol.status_document.WorkerStatus` rows the fleet
publishes from :meth:`SlotTable.rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.config import ClusterSpec, WorkerSlot
from orchestrator.protocol.status_document import WorkerState, WorkerStatus

# Which wanted slots a scale-down retires first (lower first); a slot whose
# worker holds a trial ranks 2 later. Other states rank 3.
_RETIRE_ORDER = {
    WorkerState.PENDING: 0,
    WorkerState.STARTING: 1,
    WorkerState.STOPPED: 1,
    WorkerState.IDLE: 2,
}


@dataclass
class Spare:
    """A slot's warm spare: the next worker process, started during the current
    one's last trial, warming up (imports, dataset) until it takes over."""

    actor: Any  # the Ray actor handle
    slot: WorkerSlot  # the shape it was started for (a changed slot discards it)
    incarnation: int
    info_ref: Any = None  # ObjectRef of info(), until it answered
    warm_ref: Any = None  # ObjectRef of warm(), until it is warm
    info: dict[str, Any] | None = None
    warm: bool = False


@dataclass
class SlotRuntime:
    """A slot and its current actor (monitor thread only).

    ``state`` never says RUNNING: whether an alive worker holds a trial is the
    chief's leases' to say (:meth:`WorkerStatus.holding`).
    """

    slot: WorkerSlot
    wanted: bool = True
    state: WorkerState = WorkerState.STOPPED
    actor: Any = None  # the Ray actor handle
    info_ref: Any = None  # ObjectRef of actor.info(), until it started
    run_ref: Any = None  # ObjectRef of actor.run(), while it runs trials
    incarnation: int = 0
    created_at: float = 0.0
    pending_reason: str | None = None
    pid: int | None = None
    node_id: str | None = None
    cuda_visible_devices: str | None = None
    trials_run: int = 0
    recent_deaths: list[float] = field(default_factory=list)
    preempt: bool = False
    launched: int = 0  # worker processes started for the slot (spares included)
    previous_pid: int | None = None  # the slot's last process, until its successor runs
    group: Any = None  # the slot's placement group: its reserved resources
    group_slot: WorkerSlot | None = None  # the shape the group reserves
    due_ref: Any = None  # ObjectRef of actor.recycle_due(), while run() runs
    spare: Spare | None = None

    @property
    def worker_id(self) -> str:
        return self.slot.worker_id

    def row(self) -> WorkerStatus:
        """The slot as the fleet publishes it (no trial: the session adds it)."""
        return WorkerStatus(
            worker_id=self.slot.worker_id,
            node=self.slot.node,
            gpus=tuple(self.slot.gpus),
            state=self.state,
            pending_reason=self.pending_reason,
            pid=self.pid,
            incarnation=self.incarnation,
            trials_run=self.trials_run,
            cuda_visible_devices=self.cuda_visible_devices,
            ray_node_id=self.node_id,
            spare=None if self.spare is None else ("warm" if self.spare.warm else "warming"),
        )


class SlotTable:
    """Every slot of one search's fleet, in the cluster file's order."""

    def __init__(self, cluster: ClusterSpec) -> None:
        self.cluster = cluster
        self._slots: dict[str, SlotRuntime] = {
            s.worker_id: SlotRuntime(s) for s in cluster.worker_slots()
        }

    def __iter__(self) -> Iterator[SlotRuntime]:
        return iter(self._slots.values())

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, worker_id: str) -> SlotRuntime:
        return self._slots[worker_id]

    def get(self, worker_id: str) -> SlotRuntime | None:
        return self._slots.get(worker_id)

    def ids(self) -> list[str]:
        """Every worker id, in order."""
        return list(self._slots)

    def add(self, slot: WorkerSlot, *, wanted: bool = True) -> SlotRuntime:
        """A new slot (from ``--apply``'d cluster file, or a clone)."""
        rt = SlotRuntime(slot, wanted=wanted)
        self._slots[slot.worker_id] = rt
        return rt

    def wanted_ids(self, node: str | None = None) -> list[str]:
        """The slots that should have a worker (on ``node``, when given)."""
        return [
            wid
            for wid, rt in self._slots.items()
            if rt.wanted and (node is None or rt.slot.node == node)
        ]

    def unwanted_ids(self, node: str | None = None) -> list[str]:
        """The slots that should not have a worker (on ``node``, when given)."""
        return [
            wid
            for wid, rt in self._slots.items()
            if not rt.wanted and (node is None or rt.slot.node == node)
        ]

    def nodes(self) -> set[str]:
        """Every node name, of the cluster file and of the slots."""
        return {s.node for s in self.cluster.worker_slots()} | {
            rt.slot.node for rt in self._slots.values()
        }

    def pick_victims(
        self, wanted: list[str], n: int, holds_trial: Callable[[str], bool]
    ) -> list[str]:
        """Retire the least useful first: pending, then idle, then the newest running."""
        order = list(self._slots)

        def rank(wid: str) -> tuple[int, int]:
            rt = self._slots[wid]
            busy = holds_trial(wid)
            return (_RETIRE_ORDER.get(rt.state, 3) + (2 if busy else 0), -order.index(wid))

        return sorted(wanted, key=rank)[:n]

    def grow_to(self, total: int) -> None:
        """Add slots beyond the cluster file by repeating its node shapes round-robin."""
        templates = list(self.cluster.worker_slots()) or [rt.slot for rt in self._slots.values()]
        i = 0
        while len(self._slots) < total and templates:
            template = templates[i % len(templates)]
            self._add_clone(template)
            i += 1

    def grow_node_to(self, node: str, count: int) -> None:
        """Add slots on ``node``, shaped like its first, until it has ``count``."""
        templates = [rt.slot for rt in self._slots.values() if rt.slot.node == node]
        while templates and sum(1 for rt in self._slots.values() if rt.slot.node == node) < count:
            self._add_clone(templates[0])

    def _add_clone(self, template: WorkerSlot) -> None:
        index = 1 + max(
            (rt.slot.index for rt in self._slots.values() if rt.slot.node == template.node),
            default=-1,
        )
        slot = replace(template, worker_id=f"{template.node}-w{index}", index=index)
        self.add(slot, wanted=False)

    def rows(self) -> list[WorkerStatus]:
        """One row per slot worth showing (a retired slot with no actor is not)."""
        return [
            rt.row()
            for rt in self._slots.values()
            if rt.wanted or rt.actor is not None or rt.state is not WorkerState.STOPPED
        ]
