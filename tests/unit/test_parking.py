"""Parked long-polls (issue 13): a change wakes as many parked CreateTrials as
may get an answer, not the whole fleet; a newer call supersedes an older one;
a call that ends unparks what it parked. Real broker and ledger, no network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.long_poll import Poll
from orchestrator.chief.parking import AsyncWaiter, ParkingLot, ThreadWaiter
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.trials import AttemptStatus, SearchState
from tests.helpers import float_space, make_search


def _broker(make_broker: Callable[..., TrialBroker], max_trials: int) -> TrialBroker:
    search = make_search(
        {"type": "random", "max_trials": max_trials, "seed": 1},
        failure={"retries_per_trial": 2},
    )
    return make_broker(search, initial_space=float_space())


def _park(broker: TrialBroker, worker_id: str, waiter: Any = None) -> tuple[Poll, Any]:
    poll = broker.begin_poll(worker_id)
    waiter = waiter or ThreadWaiter()
    deadline = time.monotonic() + 30
    step = broker.poll_step(poll, waiter, deadline)
    if step.ask_oracle:  # the first to find max_trials reached learns it from the oracle
        assert broker.ask_oracle(worker_id, deadline) is None
        step = broker.poll_step(poll, waiter, deadline)
    assert step.answer is None and not step.ask_oracle, step
    return poll, waiter


def _woken(waiters: dict[str, ThreadWaiter]) -> list[str]:
    return [w for w, waiter in waiters.items() if waiter.wait(0)]


def test_a_requeued_trial_wakes_one_parked_call_the_oldest(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=2)
    a = broker.create_trial("w0", wait_s=0)
    b = broker.create_trial("w1", wait_s=0)
    assert a.kind is b.kind is AssignmentKind.TRIAL
    # max_trials reached: every further call parks.
    parked = {f"p{i}": _park(broker, f"p{i}") for i in range(6)}
    waiters = {w: waiter for w, (_, waiter) in parked.items()}
    assert len(broker.parked) == 6 and _woken(waiters) == []

    broker.end_trial(a.trial_id, a.token, status=AttemptStatus.INVALID, metrics={})  # requeued

    assert _woken(waiters) == ["p0"]  # one trial in the queue: one call woken
    assert len(broker.parked) == 5
    poll, _ = parked["p0"]
    got = broker.poll_step(poll, ThreadWaiter(), time.monotonic() + 30)
    assert got.answer is not None and got.answer.kind is AssignmentKind.TRIAL
    assert got.answer.trial_id == a.trial_id and got.answer.attempt == 2


def test_the_end_of_the_search_wakes_every_parked_call_with_stop(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=1)
    a = broker.create_trial("w0", wait_s=0)
    parked = {f"p{i}": _park(broker, f"p{i}") for i in range(20)}
    broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
    assert broker.state is SearchState.COMPLETED
    assert len(_woken({w: waiter for w, (_, waiter) in parked.items()})) == 20
    for poll, _ in parked.values():
        step = broker.poll_step(poll, ThreadWaiter(), time.monotonic() + 30)
        assert step.answer is not None and step.answer.kind is AssignmentKind.STOP
    assert len(broker.parked) == 0


def test_draining_a_worker_wakes_its_parked_call_only(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=1)
    broker.create_trial("w0", wait_s=0)
    parked = {f"p{i}": _park(broker, f"p{i}") for i in range(3)}
    broker.drain_worker("p1")
    assert _woken({w: waiter for w, (_, waiter) in parked.items()}) == ["p1"]
    step = broker.poll_step(parked["p1"][0], ThreadWaiter(), time.monotonic() + 30)
    assert step.answer is not None and step.answer.kind is AssignmentKind.STOP


def test_a_newer_call_supersedes_a_parked_one_and_ending_a_poll_unparks_it(
    make_broker: Callable[..., TrialBroker],
) -> None:
    broker = _broker(make_broker, max_trials=1)
    broker.create_trial("w0", wait_s=0)
    old_poll, old_waiter = _park(broker, "p0")
    new_poll = broker.begin_poll("p0")
    assert old_waiter.wait(0)  # woken by the newer call
    step = broker.poll_step(old_poll, None, time.monotonic() + 30)
    assert step.answer is not None and "superseded" in step.answer.reason
    new_waiter = ThreadWaiter()
    broker.poll_step(new_poll, new_waiter, time.monotonic() + 30)
    assert len(broker.parked) == 1
    broker.end_poll(old_poll)  # the old call's end leaves the newer one parked
    assert len(broker.parked) == 1
    broker.end_poll(new_poll)  # a call that ends (or hung up) takes its waiter along
    assert len(broker.parked) == 0 and not new_waiter.wait(0)


def test_the_lot_wakes_oldest_first_and_at_most_once() -> None:
    lot = ParkingLot()
    waiters = {f"w{i}": ThreadWaiter() for i in range(4)}
    for worker, waiter in waiters.items():
        lot.park(worker, waiter)
    assert lot.wake_oldest(2) == 2
    assert _woken(waiters) == ["w0", "w1"]
    assert lot.wake_oldest(10) == 2 and lot.wake_oldest(1) == 0
    replaced = ThreadWaiter()
    lot.park("x", replaced)
    lot.park("x", ThreadWaiter())  # one parked call per worker: the earlier is woken
    assert replaced.wait(0) and len(lot) == 1


def test_an_async_waiter_is_woken_from_another_thread() -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        woken = AsyncWaiter(loop)
        await asyncio.to_thread(woken.wake)
        timed_out = AsyncWaiter(loop)
        return await woken.wait(5.0), await timed_out.wait(0.01)

    assert asyncio.run(scenario()) == (True, False)


def test_parked_waiters_cost_no_thread(make_broker: Callable[..., TrialBroker]) -> None:
    """A thousand parked async calls: the same threads before and after."""
    import threading

    broker = _broker(make_broker, max_trials=1)
    a = broker.create_trial("w0", wait_s=0)

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        before = threading.active_count()
        waiters = []
        for i in range(1000):
            waiters.append(_park(broker, f"p{i}", AsyncWaiter(loop))[1])
        assert len(broker.parked) == 1000 and threading.active_count() == before
        broker.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 1})
        return list(await asyncio.gather(*(w.wait(5.0) for w in waiters)))

    assert asyncio.run(scenario()) == [True] * 1000


def test_an_update_space_with_nothing_new_does_not_wait_for_the_oracle(
    make_broker: Callable[..., TrialBroker],
) -> None:
    """Every worker sends its trial's hyperparameters after each build; while the
    oracle is busy (a Bayesian step) those must not queue behind it."""
    import threading

    import keras_tuner

    broker = _broker(make_broker, max_trials=3)
    known = broker.space_config()
    with broker._cond:
        broker.gate.busy = True  # the oracle is busy for as long as the test likes
    broker.update_space(known)  # returns at once: nothing new
    grown = keras_tuner.HyperParameters.from_config(known)
    grown.Int("units", 8, 64)
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (broker.update_space(grown.get_config()), done.set()), daemon=True
    )
    worker.start()
    assert not done.wait(0.3)  # something new: it waits for the gate
    broker.gate.release()
    assert done.wait(10)
    assert "units" in {e["config"]["name"] for e in broker.space_config()["space"]}
