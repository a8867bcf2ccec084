"""The embedded Ray starts only what a search on this machine uses, gives
its workers their environment without changing the chief's, and leaves no
process behind.

Each check runs in a child process of its own (the real ``connect_ray`` and
``ray.shutdown``), so the processes it lists are that Ray's and no other
test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bench.procs import bench_env

pytestmark = pytest.mark.slow

_PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    import psutil, ray
    from orchestrator.config import parse_cluster
    from orchestrator.fleet.embedded_ray import connect_ray

    cluster = parse_cluster({
        "kind": "cluster", "name": "lean", "ray": {"address": "local"},
        "nodes": [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}],
    })
    assert connect_ray(cluster) is True

    @ray.remote(num_cpus=0)
    def worker_env():
        return {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", "TF_CPP_MIN_LOG_LEVEL")}

    env = ray.get(worker_env.remote(), timeout=120)
    me = psutil.Process()
    procs = []
    for p in me.children(recursive=True):
        try:
            procs.append({"pid": p.pid, "create_time": p.create_time(),
                          "cmdline": " ".join(p.cmdline()), "name": p.name()})
        except psutil.Error:
            pass
    ray.shutdown()
    print(json.dumps({
        "procs": procs, "worker_env": env,
        "driver_malloc": os.environ.get("MALLOC_ARENA_MAX"),
        "left_after_shutdown": [p.pid for p in me.children(recursive=True)
                                if p.status() != psutil.STATUS_ZOMBIE],
    }))
    """
)


@pytest.fixture(scope="module")
def lean_ray(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd: Path = tmp_path_factory.mktemp("lean-ray")
    env = bench_env()
    env.pop("MALLOC_ARENA_MAX", None)  # the driver's must stay unset
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cmdlines(result: dict[str, Any]) -> list[str]:
    return [p["cmdline"] for p in result["procs"]]


def test_no_dashboard_monitor_or_log_monitor_process(lean_ray: dict[str, Any]) -> None:
    cmdlines = _cmdlines(lean_ray)
    assert any("gcs_server" in c for c in cmdlines), cmdlines
    assert any("raylet" in c for c in cmdlines), cmdlines
    for script in ("dashboard/dashboard.py", "autoscaler/_private/monitor.py", "log_monitor.py"):
        assert not [c for c in cmdlines if script in c], f"{script} runs: {cmdlines}"


def test_the_dashboard_agent_runs_minimal(lean_ray: dict[str, Any]) -> None:
    # Ray renames the agent process (ray::DashboardAgent); its arguments are in
    # the raylet's command line.
    (raylet,) = [c for c in _cmdlines(lean_ray) if "/raylet/raylet " in c]
    agent_command = raylet.split("--dashboard_agent_command=", 1)[1]
    agent_command = agent_command.split("--runtime_env_agent_command=", 1)[0]
    assert "dashboard/agent.py" in agent_command, raylet
    assert "--minimal" in agent_command, raylet


def test_workers_get_their_environment_and_the_driver_keeps_its_own(
    lean_ray: dict[str, Any],
) -> None:
    assert lean_ray["worker_env"] == {"MALLOC_ARENA_MAX": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    assert lean_ray["driver_malloc"] is None


def test_shutdown_leaves_no_process(lean_ray: dict[str, Any]) -> None:
    assert lean_ray["left_after_shutdown"] == []
