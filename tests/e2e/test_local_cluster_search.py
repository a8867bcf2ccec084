"""Issue 6: bring configs/gpu-cluster.yaml up as a local simulation (one raylet
per node, logical GPUs, node labels), run a search across its nodes, check
every worker's Ray node and CUDA_VISIBLE_DEVICES against the YAML, then bring
it down and check by pid that nothing of ours is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KTC = [sys.executable, "-m", "orchestrator.cli.main"]

pytestmark = pytest.mark.slow


def _ktc(*args: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*KTC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )


def test_search_across_simulated_gpu_cluster(tmp_path: Path) -> None:
    import ray

    from deploy.local import read_state

    state_dir = tmp_path / "ray-state"
    up = _ktc(
        "cluster",
        "up",
        "--local",
        str(REPO / "configs/gpu-cluster.yaml"),
        "--state-dir",
        str(state_dir),
        "--no-ray-auth",
        cwd=tmp_path,
    )
    assert up.returncode == 0, up.stderr
    info = read_state(state_dir)
    assert info is not None
    try:
        # The same machines, pointed at the simulation; the chief on loopback.
        spec = yaml.safe_load((REPO / "configs/gpu-cluster.yaml").read_text())
        spec["ray"] = {"address": info.address}
        spec["chief"] = {"host": "127.0.0.1", "port": 0, "insecure": True}
        cluster_file = tmp_path / "cluster.yaml"
        cluster_file.write_text(yaml.safe_dump(spec))
        search_file = tmp_path / "search.yaml"
        search_file.write_text(
            yaml.safe_dump(
                {
                    "name": "across",
                    "hypermodel": {"name": "sleep", "options": {"epoch_s": 0.2}},
                    "objective": "val_accuracy",
                    "oracle": {"type": "random", "max_trials": 16, "seed": 3},
                    "training": {"epochs": 2},
                }
            )
        )
        search_dir = tmp_path / "search"
        submit = _ktc(
            "submit",
            str(search_file),
            "--cluster",
            str(cluster_file),
            "--dir",
            str(search_dir),
            "--no-progress",
            cwd=tmp_path,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr

        results = json.loads(_ktc("results", str(search_dir), "--json", cwd=tmp_path).stdout)
        assert len(results) == 16 and all(r["status"] == "COMPLETED" for r in results)

        # Which Ray node carries which YAML node's label.
        ray.init(address=info.address)
        try:
            label_of = {
                n["NodeID"]: next(k for k in n["Resources"] if k.startswith("ktc_node_"))
                for n in ray.nodes()
                if n["Alive"]
            }
        finally:
            ray.shutdown()
        started = [
            json.loads(line) for line in (search_dir / "workers.jsonl").read_text().splitlines()
        ]
        seen = {w["worker_id"]: w for w in started}
        assert len(seen) == 8, sorted(seen)  # 2 nodes x 4 GPUs, one worker per GPU
        for worker in started:
            assert label_of[worker["node_id"]] == f"ktc_node_{worker['node']}", worker
            assert worker["cuda_visible_devices"] == ",".join(map(str, worker["gpus"])), worker
        for node in ("gpu-a", "gpu-b"):
            gpus = sorted(g for w in seen.values() if w["node"] == node for g in w["gpus"])
            assert gpus == [0, 1, 2, 3], (node, gpus)  # each GPU of the node exactly once
        # Trials really ran on both machines.
        workers_used = {r["worker"] for r in results}
        assert {w.split("-w")[0] for w in workers_used} == {"gpu-a", "gpu-b"}
    finally:
        down = _ktc("cluster", "down", "--local", "--state-dir", str(state_dir), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    leftovers = [
        pid
        for pid in (*info.pids, info.supervisor_pid)
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []
