"""Placement on a 2-node Ray cluster (``ray.cluster_utils.Cluster``): each
worker runs on the Ray node that carries its YAML node's label resource.

A third YAML node that Ray does not have leaves its worker pending (with the
reason, in ``ktc status``) without blocking the search.

Both Ray nodes live on this machine (127.0.0.1), so the cluster file is
single-host and needs no TLS. ``RAY_TMPDIR`` points at a private folder so the
test cluster's address file never captures other processes' ``ray.init()``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    KTC,
    RunKtc,
    WriteYaml,
    ktc_env,
    ray_test_cluster,
    read_workers,
    results_json,
    sleep_search,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A head node ``a`` (1 CPU, 2 GPUs) and a node ``b`` (2 CPUs, 2 GPUs)."""
    with ray_test_cluster(
        monkeypatch,
        "ktcmn-",
        {"num_cpus": 1, "num_gpus": 2, "resources": {"ktc_node_a": 1000}},
        [{"num_cpus": 2, "num_gpus": 2, "resources": {"ktc_node_b": 1000}}],
    ) as cluster:
        yield cluster


def _label_to_node_id(address: str) -> dict[str, str]:
    """``{"a": ray_node_id, "b": ...}`` read from Ray's node table."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        out: dict[str, str] = {}
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            for resource in node["Resources"]:
                if resource.startswith("ktc_node_"):
                    out[resource.removeprefix("ktc_node_")] = node["NodeID"]
        return out
    finally:
        ray.shutdown()


def test_each_worker_runs_on_its_yaml_node(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml, two_node_cluster: Any
) -> None:
    address = two_node_cluster.address
    labels = _label_to_node_id(address)
    assert set(labels) == {"a", "b"} and labels["a"] != labels["b"]

    cluster = {
        "kind": "cluster",
        "name": "two-nodes",
        "ray": {"address": address, "working_dir": None},
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": 0},
        "nodes": [
            {"name": "a", "host": "127.0.0.1", "gpus": [0], "cpus": 1},
            {
                "name": "b",
                "host": "127.0.0.1",
                "gpus": [0, 1],
                "cpus": 2,
                "workers": [{"gpus": [1]}, {"cpus": 1}],
            },
            # In the cluster file but not in Ray: its worker shows pending, with
            # the reason, and the search goes on without it.
            {"name": "c", "host": "127.0.0.1", "cpus": 1},
        ],
    }
    search = sleep_search("two-nodes", max_trials=10, epochs=4, epoch_s=0.8)
    search_dir = tmp_path / "search"
    argv = [
        str(KTC),
        "submit",
        str(write_yaml("search.yaml", search)),
        "--cluster",
        str(write_yaml("cluster.yaml", cluster)),
        "--dir",
        str(search_dir),
        "--no-progress",
    ]
    with subprocess.Popen(
        argv, cwd=tmp_path, env=ktc_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as submit:
        try:
            pending: dict[str, Any] = {}

            def c_is_pending() -> bool:
                status = run_ktc("status", search_dir, "--json", timeout=60)
                if status.returncode != 0:
                    return False
                for worker in json.loads(status.stdout).get("workers", []):
                    if worker["worker_id"] == "c-w0" and worker["state"] == "pending":
                        pending.update(worker)
                        return True
                return False

            wait_until(c_is_pending, 120, interval_s=1.0, what="worker c-w0 to show as pending")
            assert "ktc_node_c" in str(pending["pending_reason"]), pending
            stdout, stderr = submit.communicate(timeout=240)
        finally:
            if submit.poll() is None:
                submit.kill()
    assert submit.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-4000:]}"

    workers = {str(row["worker_id"]): row for row in read_workers(search_dir)}
    assert set(workers) == {"a-w0", "b-w0", "b-w1"}  # c-w0 never started
    for worker_id, row in workers.items():
        node = worker_id.split("-", 1)[0]
        assert row["node"] == node, row
        assert row["node_id"] == labels[node], (
            f"{worker_id} ran on Ray node {row['node_id']}, expected {labels[node]} "
            f"(the node carrying ktc_node_{node})"
        )
    assert workers["a-w0"]["cuda_visible_devices"] == "0"
    assert workers["b-w0"]["cuda_visible_devices"] == "1"
    assert workers["b-w1"]["cuda_visible_devices"] == ""
    # On a cluster the settings travel as each actor's runtime-env vars.
    from workers.actor import WORKER_PROCESS_ENV

    assert all(row["process_env"] == WORKER_PROCESS_ENV for row in workers.values()), workers

    rows = results_json(run_ktc, search_dir)
    assert sum(r["status"] == "COMPLETED" for r in rows) == 10
    assert "c-w0" not in {r["worker"] for r in rows}
