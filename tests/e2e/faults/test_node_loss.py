"""A node lost mid-search in a 2-node ``ray.cluster_utils.Cluster`` (graceful
and not): every trial its workers held is requeued, the search completes on
the remaining node, and when a node with that label joins again its slots
are refilled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.events import EventKind
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcRunner,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    ktc_status,
    ledger_events,
    search_yaml,
    wait_status,
    workers_log,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")


def node_args(label: str) -> dict[str, Any]:
    return {
        "num_cpus": 3,
        "resources": {f"ktc_node_{label}": 1000.0},
        "include_dashboard": False,
        "object_store_memory": 80 * 1024 * 1024,
    }


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Head = node a, one more node = b. Restores Ray's "current cluster" file
    so other tests' ``ray.init()`` never find this cluster."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    previous = RAY_ADDRESS_FILE.read_text() if RAY_ADDRESS_FILE.exists() else None
    cluster = Cluster(initialize_head=True, head_node_args=node_args("a"))
    try:
        cluster.add_node(**node_args("b"))
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.shutdown()
        with contextlib.suppress(OSError):
            if previous is None:
                RAY_ADDRESS_FILE.unlink(missing_ok=True)
            else:
                RAY_ADDRESS_FILE.write_text(previous)


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "abrupt"])
def test_node_removed_mid_search(ktc: KtcRunner, two_node_cluster: Any, graceful: bool) -> None:
    cluster = two_node_cluster
    (node_b,) = cluster.worker_nodes
    spec = cluster_yaml(
        [{"name": "a", "cpus": 3, "cpu_workers": 2}, {"name": "b", "cpus": 3, "cpu_workers": 2}],
        address=cluster.address,
    )
    run = ktc.submit(search_yaml(max_trials=20, epochs=6), spec)
    directory = run.search_dir

    def b_busy(doc: dict[str, Any]) -> bool:
        on_b = [w for w in doc["workers"] if w["node"] == "b" and w["trial_id"]]
        return len(on_b) == 2 and all((w["epoch"] or 0) >= 1 for w in on_b)

    doc = wait_status(directory, b_busy, STARTUP_S, "both b workers mid-trial", run)
    on_b = {w["trial_id"]: w["worker_id"] for w in doc["workers"] if w["node"] == "b"}
    b_node_id = next(w["ray_node_id"] for w in doc["workers"] if w["node"] == "b")
    cluster.remove_node(node_b, allow_graceful=graceful)

    def requeued() -> dict[str, str]:
        return {
            e.trial_id or "": e.payload["reason"]
            for e in ledger_events(directory)
            if e.kind is EventKind.REQUEUED and e.trial_id in on_b
        }

    wait_until(
        lambda: set(requeued()) == set(on_b), 60.0, interval_s=0.3, what="b's trials requeued"
    )
    for trial_id, reason in requeued().items():
        assert on_b[trial_id] in reason, reason

    # A node with label b joins again: its slots are refilled there.
    cluster.add_node(**node_args("b"))
    wait_until(
        lambda: any(
            w["node"] == "b" and w["node_id"] != b_node_id and w["incarnation"] >= 2
            for w in workers_log(directory)
        ),
        90.0,
        interval_s=0.5,
        what="a b worker on the new node",
    )

    assert run.wait(180.0) == 0, run.output()[-3000:]
    events = assert_no_duplicate_or_lost(directory, expected_trials=20)
    for trial_id in on_b:
        done = next(e for e in events if e.kind is EventKind.COMPLETED and e.trial_id == trial_id)
        assert done.attempt == 2
    assert ktc_status(directory)["state"] == "completed"
