"""What a scale request changes in the fleet: ``ktc scale DIR N``, ``--node
NAME=N`` and ``--apply CLUSTER.yaml``, with or without ``--now``.

A mixin of :class:`~orchestrator.fleet.slots.Fleet`, kept apart so each module
holds one concept: the fleet's monitor thread runs these commands (queued to
it, so no Ray call happens anywhere else), and they only mark slots wanted or
retired; the monitor's next pass starts or stops the processes. Every request
is checked whole before anything changes: a refused request changes nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orchestrator.config import ClusterSpec
from orchestrator.errors import ConfigError
from orchestrator.protocol.status_document import WorkerState

if TYPE_CHECKING:
    from orchestrator.fleet.slot_table import SlotRuntime, SlotTable

log = logging.getLogger(__name__)


class FleetScaling:
    """Scale commands (see the module docstring)."""

    # Provided by Fleet.
    _slots: SlotTable
    hooks: Any  # BrokerHooks

    @property
    def cluster(self) -> ClusterSpec:
        raise NotImplementedError  # Fleet's

    def _kill(self, rt: SlotRuntime, why: str) -> None:
        raise NotImplementedError  # Fleet's

    def _request_resources(self) -> None:
        raise NotImplementedError  # Fleet's

    def _scale_total(self, workers: int, now: bool) -> str:
        if workers < 0:
            raise ConfigError(f"--workers: expected a number >= 0, got {workers}")
        self._check_cap(workers, f"--workers {workers}")
        wanted = self._slots.wanted_ids()
        if workers > len(wanted):
            self._slots.grow_to(workers)
            started = self._slots.unwanted_ids()[: workers - len(wanted)]
            for wid in started:
                self._slots[wid].wanted = True
            self._request_resources()
            return f"scaling up {len(wanted)} -> {workers}: starting {', '.join(started)}"
        if workers < len(wanted):
            victims = self._pick_victims(wanted, len(wanted) - workers)
            self._retire(victims, now)
            verb = "preempting" if now else "draining"
            return f"scaling down {len(wanted)} -> {workers}: {verb} {', '.join(victims)}"
        return f"already at {workers} workers"

    def _scale_nodes(self, counts: dict[str, int], now: bool) -> str:
        known = self._slots.nodes()
        # Every node is checked before any changes: a refused request changes nothing.
        for node, count in counts.items():
            if node not in known:
                raise ConfigError(
                    f"--node {node}={count}: no node named {node!r} in the cluster file; "
                    f"known nodes: {', '.join(sorted(known))}"
                )
            if count < 0:
                raise ConfigError(f"--node {node}={count}: expected a number >= 0")
        total = sum(
            counts.get(node, len(self._slots.wanted_ids(node))) for node in self._slots.nodes()
        )
        self._check_cap(total, " ".join(f"--node {n}={c}" for n, c in counts.items()))
        parts = []
        for node, count in counts.items():
            wanted = self._slots.wanted_ids(node)
            if count > len(wanted):
                self._slots.grow_node_to(node, count)
                for wid in self._slots.unwanted_ids(node)[: count - len(wanted)]:
                    self._slots[wid].wanted = True
                parts.append(f"{node}: {len(wanted)} -> {count}")
            elif count < len(wanted):
                self._retire(self._pick_victims(wanted, len(wanted) - count), now)
                parts.append(f"{node}: {len(wanted)} -> {count} ({'preempt' if now else 'drain'})")
            else:
                parts.append(f"{node}: already {count}")
        self._request_resources()
        return "; ".join(parts)

    def _check_cap(self, total: int, request: str) -> None:
        """Scaling past the cluster file is allowed, up to ``fleet.max_workers``."""
        cap = self.cluster.fleet.max_workers
        if total > cap:
            raise ConfigError(
                f"{request}: the fleet would have {total} workers; expected at most "
                f"fleet.max_workers ({cap}). Ask for fewer, or raise fleet.max_workers in the "
                "cluster file and `ktc scale --apply` it."
            )

    def _apply(self, cluster: ClusterSpec, now: bool) -> str:
        new_slots = {s.worker_id: s for s in cluster.worker_slots()}
        removed: list[str] = []
        added: list[str] = []
        changed: list[str] = []
        for rt in self._slots:
            new = new_slots.get(rt.worker_id)
            if new is None:
                if rt.wanted:
                    removed.append(rt.worker_id)
            elif new != rt.slot:
                changed.append(rt.worker_id)
        self._retire(removed + changed, now)
        for wid, slot in new_slots.items():
            existing = self._slots.get(wid)
            if existing is None:
                self._slots.add(slot)
                added.append(wid)
            else:
                # A changed slot restarts with its new shape once the old actor is gone.
                existing.slot = slot
                existing.wanted = True
        self._slots.cluster = cluster
        self._request_resources()
        return (
            f"applied {cluster.name}: +{len(added)} ({', '.join(added) or '-'}), "
            f"-{len(removed)} ({', '.join(removed) or '-'}), ~{len(changed)} ({', '.join(changed) or '-'})"
        )

    def _pick_victims(self, wanted: list[str], n: int) -> list[str]:
        return self._slots.pick_victims(wanted, n, self.hooks.holds_trial)

    def _retire(self, worker_ids: list[str], now: bool) -> None:
        for wid in worker_ids:
            rt = self._slots[wid]
            rt.wanted = False
            log.info("retiring %s (%s)", wid, "preempt" if now else "drain")
            if rt.actor is None:
                rt.state = WorkerState.STOPPED
            elif rt.state in (WorkerState.PENDING, WorkerState.STARTING):
                self._kill(rt, "retired before it started")
            elif now:
                # Requeue its trial first (not a failure), then kill the process.
                rt.preempt = True
                self.hooks.preempt(wid)
                self._kill(rt, "preempted")
            else:
                # The broker answers STOP to its next CreateTrial; its running
                # trial finishes and is recorded.
                self.hooks.drain(wid)
                rt.state = WorkerState.DRAINING
