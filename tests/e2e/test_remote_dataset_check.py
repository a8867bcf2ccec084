"""Issue 12.7, the remote half: on a cluster that is not ``ray.address: local``,
``ktc submit`` cannot check the dataset paths (they are the workers' paths), so
each worker checks them before its first trial. A missing path ends the search
at once, FAILED with the worker's own message, instead of a crash loop of every
worker failing every trial.

The "remote" cluster is this machine's: ``ktc cluster up --local`` (deploy/local.py)
starts a one-node Ray that ``ktc submit`` joins by address, as it would a real
cluster, and ``ktc cluster down --local`` stops it by pid.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import RunKtc, WriteYaml, sleep_search

pytestmark = pytest.mark.slow


def _events(ledger: Path) -> list[tuple[float, str, str]]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        return [
            (float(ts), str(kind), str(payload))
            for ts, kind, payload in conn.execute("SELECT ts, kind, payload FROM events")
        ]


def test_missing_dataset_on_a_remote_cluster_fails_the_search_at_once(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    missing = tmp_path / "not-here" / "data.npz"
    node = {"name": "head", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}
    cluster: dict[str, object] = {
        "kind": "cluster",
        "name": "remote-sim",
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": 0},
        "nodes": [node],
    }
    state_dir = tmp_path / "ray-state"
    up = run_ktc(
        "cluster",
        "up",
        "--local",
        write_yaml("sim.yaml", cluster),
        "--state-dir",
        state_dir,
        "--no-ray-auth",
        timeout=180,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    from deploy.local import read_state

    info = read_state(state_dir)
    assert info is not None
    try:
        cluster_file = write_yaml("cluster.yaml", {**cluster, "ray": {"address": info.address}})
        search = {
            **sleep_search("remote-dataset", max_trials=6),
            # A Keras model: the session must not load the workers' dataset here.
            "hypermodel": "mlp",
            "dataset": {"source": "npz", "path": str(missing)},
            "failure": {"retries_per_trial": 3},
        }
        search_file = write_yaml("search.yaml", search)
        search_dir = tmp_path / "search"
        # `ktc submit` does not check the path: on a remote cluster it is the workers'.
        submit = run_ktc(
            "submit", search_file, "--cluster", cluster_file, "--dir", search_dir, timeout=240
        )
    finally:
        down = run_ktc("cluster", "down", "--local", "--state-dir", state_dir, timeout=120)
    output = submit.stdout + submit.stderr
    assert submit.returncode == 1, output
    assert f"path '{missing}' does not exist" in submit.stdout, output
    assert "search failed" in submit.stdout, output
    # The worker's own message, not the fleet's crash-loop wrapper or a traceback.
    assert "crashed" not in output and "Traceback" not in output, output

    status = json.loads(run_ktc("status", search_dir, "--json").stdout)
    assert status["state"] == "failed", status
    assert status["message"].startswith("worker head-w"), status["message"]
    assert f"dataset.path: path '{missing}' does not exist" in status["message"]
    events = _events(search_dir / "ledger.db")
    # No trial was handed out, so none was retried or failed.
    assert not [kind for _, kind, _ in events if kind in ("assigned", "failed", "requeued")]
    # The search ended within seconds of the first worker starting.
    first_worker_ts = min(
        json.loads(line)["ts"] for line in (search_dir / "workers.jsonl").read_text().splitlines()
    )
    end_ts = max(ts for ts, kind, _ in events)
    assert end_ts - first_worker_ts < 15, (first_worker_ts, events[-3:])

    assert down.returncode == 0, down.stdout + down.stderr
    leftovers = [
        pid
        for pid in (*info.pids, info.supervisor_pid)
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []
