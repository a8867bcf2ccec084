"""deploy.local: a 2-node cluster simulated on this machine comes up with the
YAML's GPUs and node-label resources, places actors by label, and `down`
leaves none of its processes running."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from deploy.local import read_state, start_local_cluster, stop_local_cluster
from orchestrator.config.cluster import ClusterSpec
from orchestrator.errors import DeployError

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_local_two_node_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = ClusterSpec.model_validate(
        {
            "name": "sim",
            "nodes": [
                {"name": "a", "host": "127.0.0.1", "gpus": [0, 1], "cpus": 2},
                {"name": "b", "host": "127.0.0.1", "gpus": [2, 3], "cpus": 2},
            ],
        }
    )
    state_dir = tmp_path / "state"
    info = start_local_cluster(spec, state_dir, ray_auth=False)
    try:
        assert info.state_file.exists()
        assert all(psutil.pid_exists(p) for p in info.pids)
        with pytest.raises(DeployError, match=r"a local cluster is already running from"):
            start_local_cluster(spec, state_dir, ray_auth=False)

        import ray

        ray.init(address=info.address, include_dashboard=False, log_to_driver=False)
        try:
            nodes = {
                next(k for k in n["Resources"] if k.startswith("ktc_node_")): n
                for n in ray.nodes()
                if n["Alive"]
            }
            assert set(nodes) == {"ktc_node_a", "ktc_node_b"}
            for node in nodes.values():
                assert node["Resources"]["GPU"] == 2.0
                assert node["Resources"]["CPU"] == 2.0

            @ray.remote(num_cpus=0, num_gpus=1)
            class Where:
                def where(self) -> tuple[str, str]:
                    return (
                        ray.get_runtime_context().get_node_id(),
                        os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                    )

            actors = {
                name: Where.options(resources={f"ktc_node_{name}": 0.001}).remote()  # type: ignore[attr-defined]
                for name in ("a", "b")
            }
            seen = {name: ray.get(a.where.remote(), timeout=120) for name, a in actors.items()}
            for name, (node_id, cvd) in seen.items():
                assert node_id == nodes[f"ktc_node_{name}"]["NodeID"]
                # Ray hands out the YAML's GPU ids (node b owns GPUs 2 and 3).
                assert cvd in ({"0", "1"} if name == "a" else {"2", "3"})
            for actor in actors.values():
                ray.kill(actor)
        finally:
            ray.shutdown()
    finally:
        stop_local_cluster(state_dir)

    assert read_state(state_dir) is None
    assert wait_until(lambda: not any(psutil.pid_exists(p) for p in info.pids), 30)
    assert not psutil.pid_exists(info.supervisor_pid)
    with pytest.raises(DeployError, match=r"no local cluster is recorded in"):
        stop_local_cluster(state_dir)
