"""The fleet: the cluster spec's worker slots, kept in step with live Ray actors.

One monitor thread owns every Ray call about actors (create, wait, kill), so
there is no locking around Ray itself; scale requests are queued to it. The
thread blocks in ``ray.wait`` on the actors' ``info``/``run`` futures, which is
how it learns at once that an actor started, finished its recycle quota, or
died (Ray's actor-death signal). A death requeues the worker's trial through
the broker immediately instead of waiting out the lease, and the slot gets a
fresh actor while it is still wanted.

An actor that cannot be placed stays PENDING with a reason computed from the
cluster's nodes (no node carries its label, or the node lacks free GPUs/CPUs);
nothing blocks on it. On an autoscaling cluster the fleet asks for the missing
resources with ``ray.autoscaler.sdk.request_resources``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from orchestrator.config import ClusterSpec, WorkerSlot
from orchestrator.errors import ConfigError, FleetError

log = logging.getLogger(__name__)

PENDING_AFTER_S = 5.0  # an actor not up by then is reported pending, with a reason
CRASH_LOOP_WINDOW_S = 20.0
CRASH_LOOP_LIMIT = 3


class SlotState(str, Enum):
    STARTING = "starting"  # actor created, constructor not done
    PENDING = "pending"  # not placeable (yet): see pending_reason
    IDLE = "idle"  # alive, no trial
    RUNNING = "running"  # alive, holds a trial
    DRAINING = "draining"  # finishing its trial, then it stops
    STOPPED = "stopped"
    DEAD = "dead"  # crash-looping; not restarted


@dataclass
class SlotRuntime:
    """A slot and its current actor (monitor thread only)."""

    slot: WorkerSlot
    wanted: bool = True
    state: SlotState = SlotState.STOPPED
    actor: Any = None
    info_ref: Any = None
    run_ref: Any = None
    incarnation: int = 0
    created_at: float = 0.0
    pending_reason: str | None = None
    pid: int | None = None
    node_id: str | None = None
    cuda_visible_devices: str | None = None
    trials_run: int = 0
    recent_deaths: list[float] = field(default_factory=list)
    preempt: bool = False


@dataclass(frozen=True)
class FleetWorker:
    """A read-only row for status displays."""

    worker_id: str
    node: str
    gpus: tuple[int, ...]
    state: str
    pending_reason: str | None
    pid: int | None
    node_id: str | None
    cuda_visible_devices: str | None
    incarnation: int
    trials_run: int


class BrokerHooks:
    """What the fleet tells the broker (duck-typed TrialBroker)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def worker_lost(self, worker_id: str, reason: str) -> None:
        self.broker.worker_lost(worker_id, reason)

    def drain(self, worker_id: str) -> None:
        self.broker.drain_worker(worker_id)

    def preempt(self, worker_id: str) -> None:
        self.broker.preempt_worker(worker_id, "preempted by `ktc scale --now`")

    def forget(self, worker_id: str) -> None:
        self.broker.forget_worker(worker_id)

    def holds_trial(self, worker_id: str) -> bool:
        return bool(self.broker.leases.held_by(worker_id))

    def dispatching(self) -> bool:
        return not self.broker.dispatch_stopped

    def fail_search(self, message: str) -> None:
        self.broker.fail_search(message)


class Fleet:
    """Worker actors for one search. Start with :meth:`start`, stop with :meth:`shutdown`."""

    def __init__(
        self,
        cluster: ClusterSpec,
        *,
        make_config: Callable[[WorkerSlot], Any],
        hooks: BrokerHooks,
        dataset_ref: Any = None,
        actor_name_prefix: str = "ktc",
        runtime_env: dict[str, Any] | None = None,
        env_from_raylet: bool = False,
        autoscale: bool = False,
        on_actor_started: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.make_config = make_config
        self.hooks = hooks
        self.dataset_ref = dataset_ref
        self.actor_name_prefix = actor_name_prefix
        self.runtime_env = runtime_env or {}
        # True when every worker process inherits WORKER_PROCESS_ENV from its
        # raylet (our embedded Ray): actors then carry no env vars of their own.
        self.env_from_raylet = env_from_raylet
        self.autoscale = autoscale
        self.on_actor_started = on_actor_started
        self._slots: dict[str, SlotRuntime] = {
            s.worker_id: SlotRuntime(s) for s in cluster.worker_slots()
        }
        self._commands: queue.Queue[tuple[Callable[[], str], Future[str]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows_lock = threading.Lock()
        self._rows: list[FleetWorker] = []

    # --------------------------------------------------------------- public

    def start(self, workers: int | None = None) -> None:
        """Start the monitor and one actor per wanted slot (the first ``workers``)."""
        wanted = list(self._slots)[: workers if workers is not None else None]
        if workers is not None and workers > len(self._slots):
            self._grow_to(workers)
            wanted = list(self._slots)
        for worker_id, rt in self._slots.items():
            rt.wanted = worker_id in wanted
        self._thread = threading.Thread(target=self._monitor, name="ktc-fleet", daemon=True)
        self._thread.start()

    def rows(self) -> list[FleetWorker]:
        """The fleet as last seen by the monitor (cheap; safe from any thread)."""
        with self._rows_lock:
            return list(self._rows)

    def scale_total(self, workers: int, *, now: bool) -> str:
        return self._submit(lambda: self._scale_total(workers, now))

    def scale_node(self, counts: dict[str, int], *, now: bool) -> str:
        return self._submit(lambda: self._scale_nodes(counts, now))

    def apply(self, cluster: ClusterSpec, *, now: bool) -> str:
        return self._submit(lambda: self._apply(cluster, now))

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the monitor and kill every actor we started (by handle)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        import ray

        for rt in self._slots.values():
            if rt.actor is not None:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(rt.actor, no_restart=True)
                rt.actor = None
        self._publish()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no actor is still running a ``run`` call."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(rt.run_ref is not None for rt in self._slots.values()):
                return True
            self._stop.wait(0.1)
        return False

    # ------------------------------------------------------------- commands

    def _submit(self, command: Callable[[], str]) -> str:
        if self._thread is None or not self._thread.is_alive():
            raise FleetError("the fleet is not running")
        future: Future[str] = Future()
        self._commands.put((command, future))
        return future.result(timeout=60)

    def _wanted_ids(self, node: str | None = None) -> list[str]:
        return [
            wid
            for wid, rt in self._slots.items()
            if rt.wanted and (node is None or rt.slot.node == node)
        ]

    def _scale_total(self, workers: int, now: bool) -> str:
        if workers < 0:
            raise ConfigError(f"--workers: expected a number >= 0, got {workers}")
        wanted = self._wanted_ids()
        if workers > len(wanted):
            self._grow_to(workers)
            started = [wid for wid, rt in self._slots.items() if not rt.wanted][
                : workers - len(wanted)
            ]
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
        known = {s.node for s in self.cluster.worker_slots()} | {
            rt.slot.node for rt in self._slots.values()
        }
        parts = []
        for node, count in counts.items():
            if node not in known:
                raise ConfigError(
                    f"--node {node}={count}: no node named {node!r} in the cluster file; "
                    f"known nodes: {', '.join(sorted(known))}"
                )
            if count < 0:
                raise ConfigError(f"--node {node}={count}: expected a number >= 0")
            wanted = self._wanted_ids(node)
            if count > len(wanted):
                self._grow_node_to(node, count)
                idle = [
                    wid for wid, rt in self._slots.items() if rt.slot.node == node and not rt.wanted
                ]
                for wid in idle[: count - len(wanted)]:
                    self._slots[wid].wanted = True
                parts.append(f"{node}: {len(wanted)} -> {count}")
            elif count < len(wanted):
                self._retire(self._pick_victims(wanted, len(wanted) - count), now)
                parts.append(f"{node}: {len(wanted)} -> {count} ({'preempt' if now else 'drain'})")
            else:
                parts.append(f"{node}: already {count}")
        self._request_resources()
        return "; ".join(parts)

    def _apply(self, cluster: ClusterSpec, now: bool) -> str:
        new_slots = {s.worker_id: s for s in cluster.worker_slots()}
        removed: list[str] = []
        added: list[str] = []
        changed: list[str] = []
        for wid, rt in list(self._slots.items()):
            new = new_slots.get(wid)
            if new is None:
                if rt.wanted:
                    removed.append(wid)
            elif new != rt.slot:
                changed.append(wid)
        self._retire(removed + changed, now)
        for wid, slot in new_slots.items():
            existing = self._slots.get(wid)
            if existing is None:
                self._slots[wid] = SlotRuntime(slot)
                added.append(wid)
            else:
                # A changed slot restarts with its new shape once the old actor is gone.
                existing.slot = slot
                existing.wanted = True
        self.cluster = cluster
        self._request_resources()
        return (
            f"applied {cluster.name}: +{len(added)} ({', '.join(added) or '-'}), "
            f"-{len(removed)} ({', '.join(removed) or '-'}), ~{len(changed)} ({', '.join(changed) or '-'})"
        )

    def _pick_victims(self, wanted: list[str], n: int) -> list[str]:
        """Retire the least useful first: pending, then idle, then the newest running."""
        order = {
            SlotState.PENDING: 0,
            SlotState.STARTING: 1,
            SlotState.STOPPED: 1,
            SlotState.IDLE: 2,
        }

        def rank(wid: str) -> tuple[int, int]:
            rt = self._slots[wid]
            busy = self.hooks.holds_trial(wid)
            return (order.get(rt.state, 3) + (2 if busy else 0), -list(self._slots).index(wid))

        return sorted(wanted, key=rank)[:n]

    def _retire(self, worker_ids: list[str], now: bool) -> None:
        for wid in worker_ids:
            rt = self._slots[wid]
            rt.wanted = False
            if rt.actor is None:
                rt.state = SlotState.STOPPED
            elif rt.state in (SlotState.PENDING, SlotState.STARTING):
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
                rt.state = SlotState.DRAINING

    def _grow_to(self, total: int) -> None:
        """Add slots beyond the cluster file by repeating its node shapes round-robin."""
        templates = list(self.cluster.worker_slots()) or [rt.slot for rt in self._slots.values()]
        i = 0
        while len(self._slots) < total and templates:
            template = templates[i % len(templates)]
            self._add_clone(template)
            i += 1

    def _grow_node_to(self, node: str, count: int) -> None:
        templates = [rt.slot for rt in self._slots.values() if rt.slot.node == node]
        while templates and sum(1 for rt in self._slots.values() if rt.slot.node == node) < count:
            self._add_clone(templates[0])

    def _add_clone(self, template: WorkerSlot) -> None:
        index = 1 + max(
            (rt.slot.index for rt in self._slots.values() if rt.slot.node == template.node),
            default=-1,
        )
        slot = replace(template, worker_id=f"{template.node}-w{index}", index=index)
        self._slots[slot.worker_id] = SlotRuntime(slot, wanted=False)

    # -------------------------------------------------------------- monitor

    def _monitor(self) -> None:
        import ray

        while not self._stop.is_set():
            self._run_commands()
            self._reconcile()
            refs = [
                r for rt in self._slots.values() for r in (rt.info_ref, rt.run_ref) if r is not None
            ]
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=0.5)
                for ref in ready:
                    self._on_ready(ref)
            else:
                self._stop.wait(0.2)
            self._update_pending()
            self._publish()

    def _run_commands(self) -> None:
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(command())
            except Exception as exc:
                future.set_exception(exc)

    def _reconcile(self) -> None:
        """Start an actor for every wanted slot that has none (while trials are handed out)."""
        if not self.hooks.dispatching():
            return
        for rt in self._slots.values():
            if rt.wanted and rt.actor is None and rt.state is not SlotState.DEAD:
                self._start_actor(rt)

    def _start_actor(self, rt: SlotRuntime) -> None:
        from workers.actor import actor_env, remote_worker_class

        slot = rt.slot
        self.hooks.forget(slot.worker_id)  # clear a drain mark from an earlier scale-down
        config = self.make_config(slot)
        runtime_env = dict(self.runtime_env)
        if not self.env_from_raylet:
            runtime_env["env_vars"] = actor_env(config, dict(runtime_env.get("env_vars", {})))
        rt.incarnation += 1
        options: dict[str, Any] = {
            "num_cpus": slot.cpus,
            "num_gpus": slot.gpu_share,
            "resources": {slot.node_resource: 0.001},
            "runtime_env": runtime_env,
            "name": f"{self.actor_name_prefix}-{slot.worker_id}-{rt.incarnation}",
            "namespace": "ktcluster",
        }
        actor = remote_worker_class().options(**options).remote(config, self.dataset_ref)
        rt.actor = actor
        rt.info_ref = actor.info.remote()
        rt.run_ref = None
        rt.state = SlotState.STARTING
        rt.created_at = time.monotonic()
        rt.pending_reason = None
        rt.preempt = False
        log.info("started actor for %s (incarnation %d)", slot.worker_id, rt.incarnation)

    def _on_ready(self, ref: Any) -> None:
        import ray

        for rt in self._slots.values():
            if ref is rt.info_ref or ref == rt.info_ref:
                rt.info_ref = None
                try:
                    info = ray.get(ref, timeout=5)
                except Exception as exc:
                    self._on_death(rt, f"failed to start: {exc}")
                    return
                rt.pid = info.get("pid")
                rt.node_id = info.get("node_id")
                rt.cuda_visible_devices = info.get("cuda_visible_devices")
                rt.pending_reason = None
                if self.on_actor_started is not None:
                    try:
                        self.on_actor_started(
                            {
                                **info,
                                "node": rt.slot.node,
                                "gpus": list(rt.slot.gpus),
                                "incarnation": rt.incarnation,
                            }
                        )
                    except OSError as exc:
                        log.warning("could not record worker %s: %s", rt.slot.worker_id, exc)
                rt.state = SlotState.DRAINING if rt.state is SlotState.DRAINING else SlotState.IDLE
                rt.run_ref = rt.actor.run.remote()
                return
            if ref is rt.run_ref or ref == rt.run_ref:
                rt.run_ref = None
                try:
                    summary = ray.get(ref, timeout=5)
                except Exception as exc:
                    self._on_death(rt, _death_reason(exc))
                    return
                rt.trials_run += summary.trials_run
                # Recycled, drained or the search is over: this process is done.
                # _reconcile starts a fresh one if the slot is still wanted and
                # trials are still being handed out.
                self._kill(rt, f"finished ({summary.reason.value})")
                return

    def _on_death(self, rt: SlotRuntime, reason: str) -> None:
        wid = rt.slot.worker_id
        log.warning("worker %s died: %s", wid, reason)
        self.hooks.worker_lost(wid, reason)
        rt.actor = None
        rt.info_ref = None
        rt.run_ref = None
        rt.pid = None
        now = time.monotonic()
        rt.recent_deaths = [t for t in rt.recent_deaths if now - t < CRASH_LOOP_WINDOW_S] + [now]
        if len(rt.recent_deaths) >= CRASH_LOOP_LIMIT:
            rt.state = SlotState.DEAD
            rt.pending_reason = f"crash loop: died {len(rt.recent_deaths)} times in {CRASH_LOOP_WINDOW_S:g} s; last: {reason}"
            wanted = [r for r in self._slots.values() if r.wanted]
            if wanted and all(r.state is SlotState.DEAD for r in wanted):
                # Nobody is left to run trials: fail loudly instead of waiting forever.
                self.hooks.fail_search(
                    f"every worker crashed {CRASH_LOOP_LIMIT} times in a row; the last error, "
                    f"from {wid}: {reason}"
                )
        else:
            rt.state = SlotState.STOPPED

    def _kill(self, rt: SlotRuntime, why: str) -> None:
        import ray

        if rt.actor is not None:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(rt.actor, no_restart=True)
        rt.actor = None
        rt.info_ref = None
        rt.run_ref = None
        rt.pid = None
        rt.state = SlotState.STOPPED
        log.info("actor for %s stopped: %s", rt.slot.worker_id, why)

    def _update_pending(self) -> None:
        now = time.monotonic()
        slow = [
            rt
            for rt in self._slots.values()
            if rt.state in (SlotState.STARTING, SlotState.PENDING)
            and now - rt.created_at > PENDING_AFTER_S
        ]
        if not slow:
            return
        free = _free_resources_by_label()
        for rt in slow:
            rt.state = SlotState.PENDING
            rt.pending_reason = _pending_reason(rt.slot, free)

    def _request_resources(self) -> None:
        if not self.autoscale:
            return
        try:
            from ray.autoscaler.sdk import request_resources

            bundles = [
                {"CPU": rt.slot.cpus, "GPU": rt.slot.gpu_share, rt.slot.node_resource: 0.001}
                for rt in self._slots.values()
                if rt.wanted
            ]
            request_resources(bundles=bundles)
        except Exception as exc:  # not an autoscaling cluster
            log.info("request_resources unavailable: %s", exc)

    def _publish(self) -> None:
        rows = []
        for rt in self._slots.values():
            if not rt.wanted and rt.actor is None and rt.state is SlotState.STOPPED:
                continue
            state = rt.state
            if state is SlotState.IDLE and self.hooks.holds_trial(rt.slot.worker_id):
                state = SlotState.RUNNING
            elif state is SlotState.RUNNING and not self.hooks.holds_trial(rt.slot.worker_id):
                state = SlotState.IDLE
            rows.append(
                FleetWorker(
                    worker_id=rt.slot.worker_id,
                    node=rt.slot.node,
                    gpus=rt.slot.gpus,
                    state=state.value,
                    pending_reason=rt.pending_reason,
                    pid=rt.pid,
                    node_id=rt.node_id,
                    cuda_visible_devices=rt.cuda_visible_devices,
                    incarnation=rt.incarnation,
                    trials_run=rt.trials_run,
                )
            )
        with self._rows_lock:
            self._rows = rows


def _death_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _free_resources_by_label() -> dict[str, dict[str, float]]:
    """Per node label: total resources of the alive Ray node that carries it."""
    import ray

    out: dict[str, dict[str, float]] = {}
    try:
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            for name in resources:
                if name.startswith("ktc_node_"):
                    out[name] = dict(resources)
    except Exception:
        pass
    return out


def _pending_reason(slot: WorkerSlot, by_label: dict[str, dict[str, float]]) -> str:
    node = by_label.get(slot.node_resource)
    if node is None:
        return (
            f"no Ray node carries the label {slot.node_resource} (node {slot.node!r} of the "
            "cluster file is not in the Ray cluster); start it with `ktc cluster up` or wait for it to join"
        )
    want = f"{slot.cpus:g} CPU" + (f", {slot.gpu_share:g} GPU" if slot.gpu_share else "")
    total = f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU"
    return (
        f"waiting for resources on node {slot.node!r}: the worker needs {want}; the node has "
        f"{total} in total and the rest is in use"
    )
