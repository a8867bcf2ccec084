"""CreateTrial: the long-poll that hands out trials, step by step.

A mixin of :class:`~orchestrator.chief.broker.TrialBroker`. A long-poll is a
sequence of steps, each under the broker's lock (:meth:`LongPolls.poll_step`):
an answer (a queued trial, STOP, WAIT at the deadline), or "ask the oracle"
(the caller holds the oracle gate and calls :meth:`LongPolls.ask_oracle`
outside the lock), or "parked": the call's waiter goes into the parking lot
(:mod:`orchestrator.chief.parking`) and the call steps again when woken or at
its deadline. :meth:`LongPolls.create_trial` drives the steps on a thread; the
chief's asyncio server drives the same steps from its event loop
(:meth:`orchestrator.chief.service.TrialServicer._long_poll`), so a parked
call holds no thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.chief.events import TrialCreated, TrialEvent
from orchestrator.chief.oracle_host import CreatedTrial, CreateOutcome
from orchestrator.chief.parking import ParkingLot, ThreadWaiter, Waiter
from orchestrator.errors import KtClusterError
from orchestrator.protocol.answers import Assignment, AssignmentKind

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from orchestrator.chief.leases import Lease, LeaseTable
    from orchestrator.chief.oracle_gate import OracleGate
    from orchestrator.chief.oracle_host import OracleHost
    from orchestrator.chief.schedulers import TrialScheduler
    from orchestrator.chief.trial_book import TrialBook, TrialRecord
    from orchestrator.clock import Clock

log = logging.getLogger(__name__)

MAX_LONG_POLL_S = 30.0
# After the oracle says IDLE with no trial running, nothing the chief sees can
# change its mind, so it is asked again after a pause (Keras Tuner asks at once,
# in a busy loop): 50 ms, doubling to 1 s, within one long-poll.
IDLE_RETRY_S = (0.05, 1.0)


@dataclass(frozen=True)
class Poll:
    """One CreateTrial long-poll: its worker and generation (newer supersedes older)."""

    worker_id: str
    generation: int


@dataclass(frozen=True)
class PollStep:
    """What one :meth:`TrialBroker.poll_step` decided; exactly one of: an
    ``answer``; ``ask_oracle`` (the caller holds the gate); parked for at most
    ``park_s`` (with ``idle_retry``, step again after a short pause: see IDLE_RETRY_S)."""

    answer: Assignment | None = None
    ask_oracle: bool = False
    park_s: float = 0.0
    idle_retry: bool = False


@dataclass(frozen=True)
class Step:
    """Run :meth:`LongPolls.poll_step` with a fresh waiter."""

    retry_idle: bool


@dataclass(frozen=True)
class AskOracle:
    """Run :meth:`LongPolls.ask_oracle`: the step took the oracle gate."""


@dataclass(frozen=True)
class Park:
    """Wait on the last step's waiter for at most ``seconds``, then unpark it."""

    seconds: float


class LongPolls:
    """Dispatching: CreateTrial's long-poll steps and whom a change wakes."""

    # Provided by TrialBroker.
    _cond: threading.Condition
    book: TrialBook
    leases: LeaseTable
    gate: OracleGate
    oracle_host: OracleHost
    parked: ParkingLot
    clock: Clock
    long_poll_s: float
    scheduler: TrialScheduler | None
    _oracle_exhausted: bool
    _idle_at_version: int | None
    _idle_with_nothing_running: bool
    _version: int
    _draining: set[str]
    _draining_all: bool
    _last_seen: dict[str, float]
    _poll_generation: dict[str, int]
    _polls: int

    if TYPE_CHECKING:  # provided by TrialBroker and SearchLifecycle (later in the MRO)

        def _commit_locked(
            self, events: Sequence[TrialEvent], *, snapshot: dict[str, Any] | None = None
        ) -> None: ...

        def _maybe_complete_locked(self) -> None: ...

    def create_trial(self, worker_id: str, wait_s: float | None = None) -> Assignment:
        """A trial for ``worker_id``, or WAIT after a long-poll, or STOP.

        The blocking form of the long-poll, for callers on a thread (tests, the
        kt_suite). The chief's gRPC server drives the same steps from its event
        loop without holding a thread while parked
        (:meth:`orchestrator.chief.service.TrialServicer.CreateTrial`).
        """
        deadline = time.monotonic() + self.long_poll_window(wait_s)
        poll = self.begin_poll(worker_id)
        try:
            plan = self.long_poll_plan(poll, deadline)
            request = next(plan)
            waiter = ThreadWaiter()  # each Step makes a fresh one; a Step comes first
            while True:
                if isinstance(request, Step):
                    waiter = ThreadWaiter()
                    reply: Any = self.poll_step(
                        poll, waiter, deadline, retry_idle=request.retry_idle
                    )
                elif isinstance(request, AskOracle):
                    reply = self.ask_oracle(worker_id, deadline)
                else:
                    reply = waiter.wait(request.seconds)
                    self.parked.unpark(worker_id, waiter)
                request = plan.send(reply)
        except StopIteration as done:
            answer: Assignment = done.value
            return answer
        finally:
            self.end_poll(poll)

    def long_poll_plan(
        self, poll: Poll, deadline: float
    ) -> Generator[Step | AskOracle | Park, Any, Assignment]:
        """The long-poll's logic, once, for both drivers (:meth:`create_trial`
        on a thread, the asyncio server's ``TrialServicer._long_poll``). It
        yields what to do next and is sent the result:

        - :class:`Step`: run :meth:`poll_step` with a fresh waiter; send the PollStep;
        - :class:`AskOracle`: run :meth:`ask_oracle` (the gate is held); send its answer;
        - :class:`Park`: wait on that waiter for at most ``seconds``, then
          unpark it; send whether it was woken.

        It returns the call's answer.
        """
        idle_pause_s = IDLE_RETRY_S[0]
        retry_idle = False
        while True:
            step: PollStep = yield Step(retry_idle)
            if step.answer is not None:
                return step.answer
            if step.ask_oracle:
                answer: Assignment | None = yield AskOracle()
                if answer is not None:
                    return answer
                retry_idle = False
                continue
            park_s = min(step.park_s, idle_pause_s) if step.idle_retry else step.park_s
            woken: bool = yield Park(park_s)
            retry_idle = step.idle_retry and not woken
            if retry_idle:
                idle_pause_s = min(idle_pause_s * 2, IDLE_RETRY_S[1])

    def long_poll_window(self, wait_s: float | None) -> float:
        """How long a CreateTrial asking for ``wait_s`` may park (None: the chief's default)."""
        return self.long_poll_s if wait_s is None else min(max(wait_s, 0.0), MAX_LONG_POLL_S)

    def begin_poll(self, worker_id: str) -> Poll:
        """Start a CreateTrial long-poll for ``worker_id``. A call of the same
        worker still running is superseded: it answers WAIT at once (one parked
        call per worker). Pair with :meth:`end_poll`."""
        with self._cond:
            self._polls += 1
            superseded = worker_id in self._poll_generation  # its earlier call still runs
            poll = Poll(worker_id, self._polls)
            self._poll_generation[worker_id] = poll.generation
            if superseded:
                # Under the lock: the earlier call is parked (woken now) or will
                # see the new generation at its next step.
                self.parked.wake_workers([worker_id])
        return poll

    def end_poll(self, poll: Poll) -> None:
        """The call answered or hung up: forget it, and the waiter it parked (a
        call cancelled while a step ran may have parked one after it stopped
        listening; left in the lot, it would swallow a wake-up)."""
        with self._cond:
            if self._poll_generation.get(poll.worker_id) == poll.generation:
                del self._poll_generation[poll.worker_id]
                # Only the current call of a worker parks (older ones see the
                # new generation), so whatever is parked for it is this call's.
                self.parked.discard(poll.worker_id)

    def poll_step(
        self, poll: Poll, waiter: Waiter | None, deadline: float, *, retry_idle: bool = False
    ) -> PollStep:
        """One step of a long-poll: the answer, or "ask the oracle" (the caller
        then holds the gate and calls :meth:`ask_oracle`), or parked: ``waiter``
        is woken when something may have changed the answer, and the caller
        steps again after that or after ``park_s``. Never blocks on anything
        but the broker's lock and one ledger commit (an assignment)."""
        worker_id = poll.worker_id
        with self._cond:
            self._last_seen[worker_id] = self.clock.monotonic()
            if retry_idle:
                self._idle_at_version = None  # see IDLE_RETRY_S
            if self._poll_generation.get(worker_id) != poll.generation:
                return PollStep(
                    Assignment(
                        AssignmentKind.WAIT,
                        reason="superseded by a newer CreateTrial from this worker",
                    )
                )
            answer = self._dispatch_locked(worker_id)
            if answer is not None:
                return PollStep(answer)
            if self._may_ask_oracle_locked():
                self.gate.busy = True
                return PollStep(ask_oracle=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return PollStep(Assignment(AssignmentKind.WAIT, reason=self._wait_reason_locked()))
            if waiter is not None:
                self.parked.park(worker_id, waiter)
            return PollStep(
                park_s=remaining,
                idle_retry=self._idle_with_nothing_running and not self.leases.all(),
            )

    def ask_oracle(self, worker_id: str, deadline: float) -> Assignment | None:
        """Ask the oracle for a trial, holding the gate that :meth:`poll_step`
        took; the assignment, or WAIT past the deadline, or None (step again)."""
        # The create and the commit of its CREATED event (with the snapshot
        # taken inside the same oracle call) happen while the gate is
        # held, so snapshots are committed in the order the oracle made them.
        try:
            self.gate.apply_pending_ends()
            created = self.oracle_host.create_trial()
            with self._cond:
                self._idle_with_nothing_running = False
                if created.outcome is CreateOutcome.RUNNING:
                    return self._register_and_assign_locked(created, worker_id)
                if created.outcome is CreateOutcome.STOPPED:
                    self._oracle_exhausted = True
                else:
                    self._idle_at_version = self._version
                    self._idle_with_nothing_running = not self.leases.all()
                self._maybe_complete_locked()
        finally:
            self.gate.release()
        if time.monotonic() >= deadline and created.outcome is CreateOutcome.IDLE:
            return Assignment(
                AssignmentKind.WAIT, reason="the oracle is waiting for running trials"
            )
        return None

    def _wake_parked_locked(self) -> None:
        """Wake as many parked long-polls as may now get an answer: every one
        when the search stops; a drained worker's; one per queued trial, and one
        more when the oracle may be asked. Never the whole fleet for one trial."""
        if self.book.state.is_terminal or self._draining_all:
            self.parked.wake_all()
            return
        if self._draining:
            self.parked.wake_workers(self._draining)
        ready = len(self.book.queue) + (1 if self._may_ask_oracle_locked() else 0)
        self.parked.wake_oldest(ready)

    def _stop_answer_locked(self, worker_id: str) -> Assignment | None:
        """STOP when ``worker_id`` may start nothing new, else None."""
        state = self.book.state
        if state.is_terminal:
            return Assignment(AssignmentKind.STOP, reason=f"the search is {state.value}")
        if self._draining_all:
            # Ctrl-C with --on-interrupt finish: running trials end, nothing new starts.
            return Assignment(AssignmentKind.STOP, reason="the search is stopping")
        if worker_id in self._draining:
            return Assignment(AssignmentKind.STOP, reason="this worker is being drained")
        return None

    def _dispatch_locked(self, worker_id: str) -> Assignment | None:
        """An answer that needs no oracle call, or None."""
        stop = self._stop_answer_locked(worker_id)
        if stop is not None:
            return stop
        held = self._held_assignment_locked(worker_id)
        if held is not None:
            return held
        if self.book.queue:
            return self._assign_locked(self.book.queue[0], worker_id, prefix=[])
        return None

    def _may_ask_oracle_locked(self) -> bool:
        if self.gate.busy or self._oracle_exhausted:
            return False
        # After IDLE, ask again only once something changed (an end, a requeue,
        # a space update); otherwise long-poll.
        return self._idle_at_version is None or self._idle_at_version != self._version

    def _wait_reason_locked(self) -> str:
        if self._oracle_exhausted:
            return "no new trials; waiting for running trials to finish"
        return "the oracle is waiting for running trials"

    def _register_and_assign_locked(self, created: CreatedTrial, worker_id: str) -> Assignment:
        if created.trial_id is None or created.trial_state is None:
            raise KtClusterError("the oracle returned a RUNNING trial without an id or state")
        event = TrialCreated(
            trial_id=created.trial_id,
            trial_state=created.trial_state,
            values=dict(created.values or {}),
        )
        self._idle_at_version = None
        # The oracle ran outside the lock: a Ctrl-C, cancel or drain may have
        # come meanwhile. The trial it made is recorded (PENDING, for whoever
        # runs next or a resume); this worker starts nothing.
        answer = self._stop_answer_locked(worker_id) or self._held_assignment_locked(worker_id)
        if answer is not None:
            # Stopping, or a newer call of the same worker got a trial meanwhile:
            # the new trial is queued for whoever asks next.
            self._commit_locked([event], snapshot=created.snapshot)
            self._wake_parked_locked()
            return answer
        return self._assign_locked(
            created.trial_id, worker_id, prefix=[event], snapshot=created.snapshot
        )

    def _held_assignment_locked(self, worker_id: str) -> Assignment | None:
        """The attempt ``worker_id`` already holds, answered again, or None.

        A worker runs one trial at a time, so a CreateTrial from a worker that
        holds a lease is a retry whose answer was lost (or a client hoarding
        trials): it gets the same attempt and token back, as Keras Tuner's
        oracle gives a tuner its ongoing trial, and no other trial. The lease
        is renewed; nothing is committed."""
        held = self.leases.held_by(worker_id)
        if not held:
            return None
        lease = held[0]
        self.leases.renew(lease.trial_id, lease.token)
        rec = self.book.records[lease.trial_id]
        log.info(
            "trial %s attempt %d: worker %s asked for a trial while holding it; answered again",
            lease.trial_id,
            lease.attempt,
            worker_id,
        )
        return self._assignment(rec, lease)

    def _assignment(self, rec: TrialRecord, lease: Lease) -> Assignment:
        return Assignment(
            AssignmentKind.TRIAL,
            trial_id=rec.trial_id,
            attempt=lease.attempt,
            token=lease.token,
            values=dict(rec.values),
            trial_state=rec.trial_state,
            lease_timeout_s=self.leases.timeout_s,
            reports_async=self.scheduler is None,
        )

    def _assign_locked(
        self,
        trial_id: str,
        worker_id: str,
        *,
        prefix: list[TrialEvent],
        snapshot: dict[str, Any] | None = None,
    ) -> Assignment:
        rec = self.book.records.get(trial_id)
        attempt = (rec.attempt if rec else 0) + 1
        lease = self.leases.grant(trial_id, worker_id, attempt)
        try:
            assigned = self.book.assign(trial_id, worker_id, lease.token)
            self._commit_locked([*prefix, assigned], snapshot=snapshot)
        except BaseException:
            self.leases.release(trial_id)
            raise
        log.info("trial %s attempt %d -> worker %s", trial_id, attempt, worker_id)
        return self._assignment(self.book.records[trial_id], lease)


__all__ = [
    "IDLE_RETRY_S",
    "MAX_LONG_POLL_S",
    "AskOracle",
    "LongPolls",
    "Park",
    "Poll",
    "PollStep",
    "Step",
]
