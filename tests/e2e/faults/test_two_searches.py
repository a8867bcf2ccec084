"""Two searches on one Ray cluster at the same time (issue 16).

Each worker slot's CPUs and GPUs are reserved by its placement group, so a
second search gets only what the first has left: here nothing, on a 2-CPU
node whose 2 CPUs the first search's workers hold. Its worker shows as pending,
and the reason names who holds the node (the first search, by its id). Once
the first search is cancelled, the second one's worker starts and it
completes; neither search loses a trial or runs one twice.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.e2e.conftest import ray_test_cluster
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcRunner,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    search_yaml,
    wait_status,
)

pytestmark = pytest.mark.slow


def test_second_search_waits_for_what_the_first_holds(
    ktc: KtcRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ray_test_cluster(
        monkeypatch, "ktc2s-", {"num_cpus": 2, "resources": {"ktc_node_a": 1000}}
    ) as ray_cluster:
        node = [{"name": "a", "cpus": 2, "cpu_workers": 2}]
        first = ktc.submit(
            search_yaml(max_trials=40, epochs=4, name="first"),
            cluster_yaml(node, address=ray_cluster.address, name="first"),
            dir_name="first",
        )
        doc = wait_status(
            first.search_dir,
            lambda d: sum(1 for w in d["workers"] if w["trial_id"]) == 2,
            STARTUP_S,
            "both workers of the first search busy",
            first,
        )
        first_id = str(doc["search_id"])[:8]

        second = ktc.submit(
            search_yaml(max_trials=2, epochs=2, name="second"),
            cluster_yaml(
                [{"name": "a", "cpus": 2, "cpu_workers": 1}],
                address=ray_cluster.address,
                name="second",
            ),
            dir_name="second",
        )

        def pending(d: dict[str, Any]) -> bool:
            return any(w["state"] == "pending" and w["pending_reason"] for w in d["workers"])

        waiting = wait_status(
            second.search_dir, pending, STARTUP_S, "the second search pending", second
        )
        reason = waiting["workers"][0]["pending_reason"]
        assert "needs 1 CPU" in reason and "2 CPU, 0 GPU in total" in reason, reason
        # Named by its directory (a detached search's id), with its id's start.
        assert f"2 CPU by ktcluster search first ({first_id})" in reason, reason
        assert waiting["counts"]["RUNNING"] == 0

        # The first search goes; the second gets its room and completes.
        first.proc.send_signal(signal.SIGINT)
        assert first.wait(60.0) == 130, first.output()[-3000:]
        assert second.wait(STARTUP_S) == 0, second.output()[-3000:]
        assert_no_duplicate_or_lost(second.search_dir, expected_trials=2)
        assert_no_duplicate_or_lost(first.search_dir, finished=False)
