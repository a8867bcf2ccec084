"""The fleet's target (how many workers it is asked for) as ``ktc status`` reads
it: published before a scale command's caller hears back. No Ray: the slots are
never started."""

from __future__ import annotations

from typing import Any, cast

from orchestrator.config import parse_cluster
from orchestrator.fleet.slots import BrokerHooks, Fleet


class IdleHooks(BrokerHooks):
    """A broker with no trial held: retiring a worker has nothing to drain."""

    def holds_trial(self, worker_id: str) -> bool:
        return False

    def preempt(self, worker_id: str) -> None:
        pass

    def drain(self, worker_id: str) -> None:
        pass


def test_a_scale_to_zero_is_published_before_its_caller_returns() -> None:
    cluster = parse_cluster("nodes:\n  - {name: a, cpus: 4, cpu_workers: 2}\n")
    fleet = Fleet(cluster, make_config=lambda slot: None, hooks=IdleHooks(cast(Any, None)))
    assert fleet.wanted_count() is None  # the monitor has not published yet
    fleet._publish()
    assert fleet.wanted_count() == 2
    future: Any = _queue(fleet, lambda: fleet._scale_total(0, now=True))
    fleet._run_commands()  # what the monitor thread does
    assert future.result(timeout=1).startswith("scaling down 2 -> 0")
    assert fleet.wanted_count() == 0


def _queue(fleet: Fleet, command: Any) -> Any:
    from concurrent.futures import Future

    future: Future[str] = Future()
    fleet._commands.put((command, future))
    return future
