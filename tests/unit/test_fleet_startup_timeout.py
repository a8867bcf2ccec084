"""fleet.startup_timeout_s: a worker whose node is not in the Ray cluster waits
that long, then its slot is given up, and a search with no worker left fails
with the reason instead of hanging (the fault audit of 2026-12-01: the embedded
raylet killed, `ktc submit` never exited). No Ray: Ray's view of the nodes is
replaced by what each case needs."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

import orchestrator.fleet.slots as slots_module
from orchestrator.config import parse_cluster
from orchestrator.fleet.slots import PENDING_AFTER_S, BrokerHooks, Fleet
from orchestrator.protocol.status_document import WorkerState

REMOTE = """
ray: {address: 10.0.0.1:6379}
fleet: {startup_timeout_s: 30}
nodes:
  - {name: a, host: 10.0.0.1, cpus: 2, cpu_workers: 2}
"""
LOCAL = "nodes:\n  - {name: local, cpus: 2, cpu_workers: 2}\n"


class RecordingHooks(BrokerHooks):
    def __init__(self) -> None:
        super().__init__(cast(Any, None))
        self.failed: list[str] = []

    def fail_search(self, message: str) -> None:
        self.failed.append(message)


def _fleet(
    text: str, monkeypatch: pytest.MonkeyPatch, by_label: dict[str, Any]
) -> tuple[Fleet, RecordingHooks]:
    monkeypatch.setattr(slots_module, "resources_by_label", lambda: by_label)
    monkeypatch.setattr(slots_module, "holders_by_label", lambda: {})
    hooks = RecordingHooks()
    fleet = Fleet(parse_cluster(text), make_config=lambda slot, credential: None, hooks=hooks)
    return fleet, hooks


def _starting_since(fleet: Fleet, seconds_ago: float) -> None:
    for rt in fleet._slots:
        rt.state = WorkerState.STARTING
        rt.created_at = time.monotonic() - seconds_ago


def test_a_worker_waits_startup_timeout_s_for_its_node_then_the_search_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet, hooks = _fleet(REMOTE, monkeypatch, by_label={})
    _starting_since(fleet, 20.0)  # past PENDING_AFTER_S, within the 30-s timeout
    fleet._update_pending()
    assert {rt.state for rt in fleet._slots} == {WorkerState.PENDING}
    assert hooks.failed == []
    _starting_since(fleet, 31.0)
    fleet._update_pending()
    assert {rt.state for rt in fleet._slots} == {WorkerState.DEAD}
    (message,) = hooks.failed
    assert "gave up after 31 s (fleet.startup_timeout_s)" in message
    assert "no Ray node carries the label" in message


def test_a_worker_waiting_for_resources_others_hold_is_not_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet, hooks = _fleet(REMOTE, monkeypatch, by_label={})
    node = next(iter(fleet._slots)).slot.node_resource
    monkeypatch.setattr(slots_module, "resources_by_label", lambda: {node: {"CPU": 2.0}})
    _starting_since(fleet, 3600.0)
    fleet._update_pending()
    assert {rt.state for rt in fleet._slots} == {WorkerState.PENDING}
    assert all("waiting for resources" in (rt.pending_reason or "") for rt in fleet._slots)
    assert hooks.failed == []


def test_on_the_embedded_ray_a_missing_node_is_given_up_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet, hooks = _fleet(LOCAL, monkeypatch, by_label={})
    _starting_since(fleet, PENDING_AFTER_S + 1)
    fleet._update_pending()
    assert {rt.state for rt in fleet._slots} == {WorkerState.DEAD}
    (message,) = hooks.failed
    assert "the embedded Ray's node is gone" in message and "ktc resume" in message


def test_one_slot_given_up_leaves_the_search_running_on_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet, hooks = _fleet(REMOTE, monkeypatch, by_label={})
    first, second = list(fleet._slots)
    first.state, first.created_at = WorkerState.STARTING, time.monotonic() - 60
    second.state = WorkerState.IDLE  # up and working
    fleet._update_pending()
    assert (first.state, second.state) == (WorkerState.DEAD, WorkerState.IDLE)
    assert hooks.failed == []


def test_on_the_embedded_ray_a_node_added_by_apply_waits_like_any_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This machine's node is alive; a node `scale --apply` added is not (yet)."""
    two = LOCAL + "  - {name: b, cpus: 2, cpu_workers: 1}\n"
    fleet, hooks = _fleet(two, monkeypatch, by_label={})
    local = next(rt for rt in fleet._slots if rt.slot.node == "local").slot.node_resource
    monkeypatch.setattr(slots_module, "resources_by_label", lambda: {local: {"CPU": 2.0}})
    _starting_since(fleet, PENDING_AFTER_S + 1)
    fleet._update_pending()
    b = next(rt for rt in fleet._slots if rt.slot.node == "b")
    assert b.state is WorkerState.PENDING and hooks.failed == []
    assert "no Ray node carries the label" in (b.pending_reason or "")
