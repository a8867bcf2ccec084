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

The slot bookkeeping (which slots exist and are wanted, which to retire first)
is ``slot_table.py``; an actor's Ray options and pending reasons are
``placement.py``; what a scale request changes is ``scaling.py``; warm spares
are ``spares.py``. This module is the monitor that drives them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.config import ClusterSpec, WorkerSlot
from orchestrator.errors import FleetError
from orchestrator.fleet.placement import (
    death_reason,
    group_name,
    holders_by_label,
    pending_reason,
    process_options,
    release_slot,
    request_resources,
    reserve_slot,
    resources_by_label,
    search_tag,
)
from orchestrator.fleet.scaling import FleetScaling
from orchestrator.fleet.slot_table import SlotRuntime, SlotTable
from orchestrator.fleet.spares import FleetSpares
from orchestrator.protocol.status_document import WorkerState, WorkerStatus
from workers.runner import ExitReason

if TYPE_CHECKING:
    from orchestrator.chief.broker import TrialBroker

log = logging.getLogger(__name__)

PENDING_AFTER_S = 5.0  # an actor not up by then is reported pending, with a reason
CRASH_LOOP_WINDOW_S = 20.0
CRASH_LOOP_LIMIT = 3


class WorkerCredentials(Protocol):
    """The chief's worker registry (:class:`orchestrator.chief.registry.WorkerRegistry`):
    each process the fleet starts is registered and gets its own credential."""

    def register(self, worker_id: str) -> str: ...

    def revoke(self, worker_id: str) -> None: ...


class BrokerHooks:
    """What the fleet tells the broker, and asks it: the fleet's whole use of it."""

    def __init__(self, broker: TrialBroker) -> None:
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

    def trials_to_start(self) -> bool:
        return self.broker.trials_to_start

    def fail_search(self, message: str) -> None:
        self.broker.fail_search(message)


class Fleet(FleetScaling, FleetSpares):
    """Worker actors for one search. Start with :meth:`start`, stop with :meth:`shutdown`."""

    def __init__(
        self,
        cluster: ClusterSpec,
        *,
        make_config: Callable[[WorkerSlot, str], Any],
        hooks: BrokerHooks,
        credentials: WorkerCredentials | None = None,
        dataset_ref: Any = None,
        actor_name_prefix: str = "ktc",
        search_label: str = "",
        runtime_env: dict[str, Any] | None = None,
        env_from_raylet: bool = False,
        autoscale: bool = False,
        on_actor_started: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        # make_config(slot, credential): the actor's WorkerConfig, carrying the
        # credential the registry minted for this process ("" without a registry).
        self.make_config = make_config
        self.hooks = hooks
        self.credentials = credentials
        self.dataset_ref = dataset_ref
        self.actor_name_prefix = actor_name_prefix
        # The search's readable name, in its placement groups' names: another
        # search's pending reason names this one by it (placement.group_name).
        self.search_label = search_label
        self.runtime_env = runtime_env or {}
        # True when every worker process inherits WORKER_PROCESS_ENV from its
        # raylet (our embedded Ray): actors then carry no env vars of their own.
        self.env_from_raylet = env_from_raylet
        self.autoscale = autoscale
        self.on_actor_started = on_actor_started
        self._slots = SlotTable(cluster)
        self._commands: queue.Queue[tuple[Callable[[], str], Future[str]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows_lock = threading.Lock()
        self._rows: list[WorkerStatus] = []
        self._wanted: int | None = None  # slots that should have a worker, as last published
        self._tensorflow: bool | None = None  # whether the hypermodel needs it (spares import it)
        # A spare starts when its process starts one of the last _spare_lead
        # trials of its recycle quota: 1, raised while spares take over unwarmed.
        self._spare_lead = 1

    @property
    def cluster(self) -> ClusterSpec:
        """The cluster spec the fleet follows (the last one ``--apply``'d)."""
        return self._slots.cluster

    # --------------------------------------------------------------- public

    def start(self, workers: int | None = None) -> None:
        """Start the monitor and one actor per wanted slot (the first ``workers``)."""
        if workers is not None:
            self._check_cap(workers, f"--workers {workers}")
        wanted = self._slots.ids()[: workers if workers is not None else None]
        if workers is not None and workers > len(self._slots):
            self._slots.grow_to(workers)
            wanted = self._slots.ids()
        for rt in self._slots:
            rt.wanted = rt.worker_id in wanted
        self._thread = threading.Thread(target=self._monitor, name="ktc-fleet", daemon=True)
        self._thread.start()

    def rows(self) -> list[WorkerStatus]:
        """The fleet as last seen by the monitor (cheap; safe from any thread).

        An alive worker's row says IDLE and carries no trial: the caller that
        reads the chief's leases adds them (:meth:`WorkerStatus.holding`).
        """
        with self._rows_lock:
            return list(self._rows)

    def wanted_count(self) -> int | None:
        """How many workers the fleet is asked for (after ``ktc scale``), as last
        published by the monitor; None before its first pass. 0 means the search
        is paused: nothing runs until it is scaled up again."""
        with self._rows_lock:
            return self._wanted

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

        for rt in self._slots:
            self._drop_spare(rt, "the fleet shut down")
            if rt.actor is not None:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(rt.actor, no_restart=True)
                rt.actor = None
            if rt.group is not None:
                release_slot(rt.group)
                rt.group = None
            self._revoke(rt.slot.worker_id)
        self._publish()

    def wait_idle(self, timeout_s: float) -> bool:
        """True once no actor is still running a ``run`` call."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(rt.run_ref is not None for rt in self._slots):
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

    # -------------------------------------------------------------- monitor

    def _monitor(self) -> None:
        import ray

        while not self._stop.is_set():
            self._run_commands()
            self._reconcile()
            refs = [r for rt in self._slots for r in _watched(rt) if r is not None]
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
                result = command()
            except Exception as exc:
                future.set_exception(exc)
                continue
            # Published before the caller hears back, so a status read right
            # after `ktc scale` already shows the new target (workers_wanted).
            self._publish()
            future.set_result(result)

    def _reconcile(self) -> None:
        """Give every wanted slot a process (its warm spare first) while trials
        are still to start; drop spares and release reservations nobody needs.

        Once the last trial has been handed out, a slot whose process was
        recycled (or lost) gets no new one and a spare is dropped: it would only
        import TensorFlow beside the last trials, on their CPU, to find no work.
        A requeued trial (its worker died) makes trials to start again."""
        starting = self.hooks.trials_to_start()
        for rt in self._slots:
            if rt.spare is not None and not self._spare_wanted(rt, starting):
                self._drop_spare(rt, "no longer needed")
            if rt.actor is not None:
                continue
            if starting and rt.wanted and rt.state is not WorkerState.DEAD:
                if rt.spare is not None:
                    self._promote_spare(rt)
                else:
                    self._start_actor(rt)
            elif rt.group is not None and rt.spare is None:
                release_slot(rt.group)
                rt.group = rt.group_slot = None

    def _create_process(self, rt: SlotRuntime) -> tuple[Any, int]:
        """A new worker process for the slot, inside its placement group
        (reserved first if the slot has none, or had one of another shape)."""
        from workers.actor import ProcessSetup, actor_env, remote_worker_class

        slot = rt.slot
        rt.launched += 1
        if rt.group is not None and rt.group_slot != slot:
            release_slot(rt.group)  # its shape changed (scale --apply); nothing runs in it
            rt.group = None
            rt.previous_pid = None  # the next process may land on another node
        if rt.group is None:
            rt.group = reserve_slot(
                slot,
                name=group_name(
                    self.actor_name_prefix, slot.worker_id, rt.launched, self.search_label
                ),
            )
            rt.group_slot = slot
        setup = ProcessSetup.of(self.make_config(slot, ""))
        runtime_env = dict(self.runtime_env)
        if not self.env_from_raylet:
            runtime_env["env_vars"] = actor_env(slot, dict(runtime_env.get("env_vars", {})))
        options = process_options(
            rt.group,
            name=f"{self.actor_name_prefix}-{slot.worker_id}-{rt.launched}",
            runtime_env=runtime_env,
        )
        return remote_worker_class().options(**options).remote(setup), rt.launched

    def _start_actor(self, rt: SlotRuntime) -> None:
        """A cold start: a new process that imports everything when it runs."""
        rt.actor, rt.incarnation = self._create_process(rt)
        rt.info_ref = rt.actor.info.remote()
        rt.run_ref = None
        rt.due_ref = None
        rt.state = WorkerState.STARTING
        rt.created_at = time.monotonic()
        rt.pending_reason = None
        rt.preempt = False
        log.info("started actor for %s (incarnation %d)", rt.worker_id, rt.incarnation)

    def _begin_run(self, rt: SlotRuntime, info: dict[str, Any]) -> None:
        """The process is placed: register it (a fresh credential, revoking its
        predecessor's) and start its trials."""
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
        if rt.state is not WorkerState.DRAINING:
            rt.state = WorkerState.IDLE
        self.hooks.forget(rt.worker_id)  # clear a drain mark from an earlier scale-down
        credential = self.credentials.register(rt.worker_id) if self.credentials else ""
        config = self.make_config(rt.slot, credential)
        # The predecessor's pid: on its node, the new process waits for it to be
        # gone before touching a GPU, so two processes never hold one GPU's memory.
        rt.run_ref = rt.actor.run.remote(config, [self.dataset_ref], rt.previous_pid)
        rt.due_ref = rt.actor.recycle_due.remote(self._spare_lead) if self._spares_on() else None

    def _on_ready(self, ref: Any) -> None:
        import ray

        for rt in self._slots:
            if ref is rt.info_ref or ref == rt.info_ref:
                rt.info_ref = None
                try:
                    info = ray.get(ref, timeout=5)
                except Exception as exc:
                    self._on_death(rt, f"failed to start: {death_reason(exc)}")
                    return
                self._begin_run(rt, info)
                return
            if ref is rt.due_ref or ref == rt.due_ref:
                self._on_recycle_due(rt, ref)
                return
            spare = rt.spare
            if spare is not None and ref in (spare.info_ref, spare.warm_ref):
                self._on_spare_ready(rt, ref)
                return
            if ref is rt.run_ref or ref == rt.run_ref:
                rt.run_ref = None
                try:
                    summary = ray.get(ref, timeout=5)
                except Exception as exc:
                    self._on_death(rt, death_reason(exc))
                    return
                rt.trials_run += summary.trials_run
                if summary.reason is ExitReason.FATAL:
                    # The worker's machine cannot run any trial (its dataset is
                    # missing there): every worker would fail every trial, so the
                    # search ends now, with the worker's own message.
                    log.error("worker %s cannot run the search: %s", rt.worker_id, summary.detail)
                    self.hooks.fail_search(summary.detail)
                    self._kill(rt, "cannot run the search")
                    return
                # Recycled, drained or the search is over: this process is done.
                # _reconcile hands the slot to its spare, or starts a fresh
                # process, if the slot is still wanted and trials are still
                # being handed out.
                self._kill(rt, f"finished ({summary.reason.value})")
                return

    def _on_death(self, rt: SlotRuntime, reason: str) -> None:
        wid = rt.slot.worker_id
        log.warning("worker %s died: %s", wid, reason)
        self.hooks.worker_lost(wid, reason)
        self._revoke(wid)
        rt.actor = None
        rt.info_ref = None
        rt.run_ref = None
        rt.due_ref = None
        rt.previous_pid, rt.pid = rt.pid, None
        now = time.monotonic()
        rt.recent_deaths = [t for t in rt.recent_deaths if now - t < CRASH_LOOP_WINDOW_S] + [now]
        if len(rt.recent_deaths) >= CRASH_LOOP_LIMIT:
            rt.state = WorkerState.DEAD
            rt.pending_reason = f"crash loop: died {len(rt.recent_deaths)} times in {CRASH_LOOP_WINDOW_S:g} s; last: {reason}"
            self._fail_if_no_worker_left(
                f"{reason} (every worker crashed {CRASH_LOOP_LIMIT} times in a row; "
                f"this is the last error, from {wid})"
            )
        else:
            rt.state = WorkerState.STOPPED

    def _kill(self, rt: SlotRuntime, why: str) -> None:
        import ray

        if rt.actor is not None:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(rt.actor, no_restart=True)
        self._revoke(rt.slot.worker_id)
        rt.actor = None
        rt.info_ref = None
        rt.run_ref = None
        rt.due_ref = None
        rt.previous_pid, rt.pid = rt.pid, None
        rt.state = WorkerState.STOPPED
        log.info("actor for %s stopped: %s", rt.slot.worker_id, why)

    def _revoke(self, worker_id: str) -> None:
        """The slot's process is gone: its credential stops working."""
        if self.credentials is not None:
            self.credentials.revoke(worker_id)

    def _fail_if_no_worker_left(self, message: str) -> None:
        """Every wanted slot is DEAD: nobody is left to run trials, so the search
        fails loudly with ``message`` instead of waiting forever."""
        wanted = [r for r in self._slots if r.wanted]
        if wanted and all(r.state is WorkerState.DEAD for r in wanted):
            self.hooks.fail_search(message)

    def _update_pending(self) -> None:
        """Say why slow slots are not up; give up on those whose node is gone.

        A worker whose node is not in the Ray cluster waits
        ``fleet.startup_timeout_s`` for it to join (a node still booting, an
        autoscaler's), then its slot is given up (DEAD, with the reason). On the
        embedded local Ray with no node left, its raylet died: nothing can join,
        and every slot is given up at once. A worker waiting for CPUs or GPUs that are in use (another search
        holds them) waits as long as they are held. When no wanted slot is left,
        the search fails with the reason (resumable once Ray is back)."""
        now = time.monotonic()
        slow = [
            rt
            for rt in self._slots
            if rt.state in (WorkerState.STARTING, WorkerState.PENDING)
            and now - rt.created_at > PENDING_AFTER_S
        ]
        if not slow:
            return
        by_label = resources_by_label()
        holders = holders_by_label()
        own = search_tag(self.actor_name_prefix)
        # The embedded Ray with no node alive: its raylet died, nothing can join.
        raylet_gone = self.cluster.is_local and not by_label
        timeout_s = 0.0 if raylet_gone else self.cluster.fleet.startup_timeout_s
        for rt in slow:
            rt.state = WorkerState.PENDING
            rt.pending_reason = pending_reason(rt.slot, by_label, holders, own)
            if rt.slot.node_resource not in by_label and now - rt.created_at > timeout_s:
                self._give_up(rt, now - rt.created_at, raylet_gone=raylet_gone)

    def _give_up(self, rt: SlotRuntime, waited_s: float, *, raylet_gone: bool) -> None:
        wid = rt.slot.worker_id
        if raylet_gone:
            reason = (
                f"the embedded Ray's node is gone (its raylet died), so worker {wid} cannot "
                f"start; resume the search (`ktc resume`) to start Ray again"
            )
        else:
            reason = (
                f"worker {wid} gave up after {waited_s:.0f} s (fleet.startup_timeout_s): "
                f"{rt.pending_reason}"
            )
        self._drop_spare(rt, "its slot was given up")
        self._kill(rt, "its node is gone")
        rt.state = WorkerState.DEAD
        rt.pending_reason = reason
        log.error("%s", reason)
        self._fail_if_no_worker_left(reason)

    def _request_resources(self) -> None:
        if self.autoscale:
            request_resources([rt.slot for rt in self._slots if rt.wanted])

    def _publish(self) -> None:
        rows = self._slots.rows()
        wanted = len(self._slots.wanted_ids())
        with self._rows_lock:
            self._rows = rows
            self._wanted = wanted


def _watched(rt: SlotRuntime) -> tuple[Any, ...]:
    """The slot's outstanding Ray calls the monitor waits on."""
    spare = rt.spare
    spare_refs = (spare.info_ref, spare.warm_ref) if spare is not None else ()
    return (rt.info_ref, rt.run_ref, rt.due_ref, *spare_refs)
