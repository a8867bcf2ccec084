"""``ktc cluster up --local``: simulate a cluster YAML's nodes on this machine.

A detached supervisor process (``python -m deploy.local serve --state-dir DIR``)
starts one Ray node per YAML node with ``ray.cluster_utils.Cluster``: logical
GPUs (``num_gpus=len(node.gpus)``, with ``CUDA_VISIBLE_DEVICES`` set to the
node's GPU list while its raylet starts, so Ray hands out the YAML's GPU ids),
``num_cpus=node.cpus``, the ``ktc_node_<name>`` resource and no dashboard. It
records the Ray address and the pid of every process it started in
``DIR/local-cluster.json``, then waits for SIGTERM.

On SIGTERM it calls ``Cluster.shutdown()``, which (read in Ray 2.60's
``cluster_utils.py``) only calls ``Node.kill_all_processes`` on the processes
each node object started itself, never ``ray stop --force``, so other users'
Ray processes on the machine are safe. ``stop_local_cluster`` then checks that
every recorded pid is gone and SIGKILLs only recorded stragglers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deploy.ray_start import NODE_RESOURCE_UNITS
from orchestrator.config.cluster import ClusterSpec
from orchestrator.config.layout import node_resource_name
from orchestrator.errors import DeployError

logger = logging.getLogger(__name__)

STATE_FILE = "local-cluster.json"
NODES_FILE = "local-nodes.json"
ERROR_FILE = "local-cluster.error"
LOG_FILE = "supervisor.log"
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class LocalClusterInfo:
    """A running local simulation, as recorded in its state file."""

    address: str
    supervisor_pid: int
    pids: tuple[int, ...]
    state_file: Path


def default_state_dir(cluster_name: str) -> Path:
    """``~/.ktcluster/local-cluster/<cluster name>``."""
    return Path.home() / ".ktcluster" / "local-cluster" / cluster_name


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    # Waiting on another process's files and pids: no event to block on, so poll
    # with a short interval and a hard deadline.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(POLL_INTERVAL_S)
    return predicate()


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_state(state_dir: Path) -> LocalClusterInfo | None:
    """The recorded cluster in ``state_dir``, or None if no state file exists."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DeployError(
            f"{path}: expected a ktcluster local-cluster state file, could not read it "
            f"({exc}); if no local cluster is running, delete the file."
        ) from exc
    return LocalClusterInfo(
        address=str(data["address"]),
        supervisor_pid=int(data["supervisor_pid"]),
        pids=tuple(int(p) for p in data["pids"]),
        state_file=path,
    )


def start_local_cluster(
    spec: ClusterSpec,
    state_dir: Path,
    *,
    ray_auth: bool,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
    head_port: int | None = None,
) -> LocalClusterInfo:
    """Start the simulated cluster for ``spec`` and wait until every node is up.

    ``head_port``: the head's GCS port (``--head-port``); None lets Ray pick a
    free one. ``ray_auth=False`` sets ``RAY_AUTH_MODE=disabled`` for the simulated nodes
    (loopback tests); True leaves Ray's own default. Raises :class:`DeployError`
    if a cluster is already recorded in ``state_dir`` and alive, or if start-up
    fails or times out (the supervisor log is named in the message).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    existing = read_state(state_dir)
    if existing is not None:
        if _pid_alive(existing.supervisor_pid):
            raise DeployError(
                f"ktc cluster up --local: a local cluster is already running from "
                f"{state_dir} (address {existing.address}, supervisor pid "
                f"{existing.supervisor_pid}); stop it with `ktc cluster down --local "
                f"--state-dir {state_dir}` or pick another --state-dir."
            )
        existing.state_file.unlink(missing_ok=True)
    (state_dir / ERROR_FILE).unlink(missing_ok=True)
    (state_dir / NODES_FILE).write_text(json.dumps(node_plan(spec, head_port)))

    env = dict(os.environ)
    if not ray_auth:
        env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)  # the supervisor starts its own cluster
    log_path = state_dir / LOG_FILE
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "serve", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(Path(__file__).resolve().parent.parent),
            start_new_session=True,
        )

    def settled() -> bool:
        return (
            (state_dir / STATE_FILE).exists()
            or (state_dir / ERROR_FILE).exists()
            or proc.poll() is not None
        )

    if not _wait_for(settled, timeout_s) or not (state_dir / STATE_FILE).exists():
        reason = ""
        if (state_dir / ERROR_FILE).exists():
            reason = (state_dir / ERROR_FILE).read_text().strip()
        elif proc.poll() is not None:
            reason = f"the supervisor exited with code {proc.returncode}"
        else:
            reason = f"no cluster after {timeout_s:.0f} s"
        _terminate_supervisor(proc.pid)
        raise DeployError(
            f"ktc cluster up --local: the simulated cluster did not start: {reason}. "
            f"See {log_path}; free memory (each node needs ~250 MiB) and retry."
        )
    info = read_state(state_dir)
    if info is None:  # pragma: no cover - checked just above
        raise DeployError(f"ktc cluster up --local: {state_dir / STATE_FILE} vanished")
    return info


def _terminate_supervisor(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_for(lambda: not _pid_alive(pid), DEFAULT_STOP_TIMEOUT_S):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reap it if it is our child


def stop_local_cluster(state_dir: Path, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
    """Stop the simulated cluster recorded in ``state_dir``.

    Sends SIGTERM to the supervisor, waits for it, then checks every recorded
    pid (and every descendant of the supervisor seen before the stop) and
    SIGKILLs only those stragglers. Raises :class:`DeployError` if there is no
    recorded cluster or a recorded process survives SIGKILL.
    """
    info = read_state(state_dir)
    if info is None:
        raise DeployError(
            f"ktc cluster down --local: no local cluster is recorded in {state_dir} "
            f"(no {STATE_FILE}); pass the --state-dir given to `ktc cluster up --local`."
        )
    ours = set(info.pids)
    with contextlib.suppress(psutil.NoSuchProcess):
        ours.update(c.pid for c in psutil.Process(info.supervisor_pid).children(recursive=True))
    _terminate_supervisor(info.supervisor_pid)
    _wait_for(lambda: not any(_pid_alive(p) for p in ours), timeout_s / 2)
    for pid in sorted(ours):
        if _pid_alive(pid):
            logger.warning("local cluster: pid %d outlived shutdown; sending SIGKILL", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if not _wait_for(lambda: not any(_pid_alive(p) for p in ours), timeout_s / 2):
        alive = sorted(p for p in ours if _pid_alive(p))
        raise DeployError(
            f"ktc cluster down --local: processes {alive} are still running after "
            "SIGKILL; check them with `ps -p`."
        )
    info.state_file.unlink(missing_ok=True)
    (state_dir / NODES_FILE).unlink(missing_ok=True)


# --- the supervisor process ------------------------------------------------


def node_plan(spec: ClusterSpec, head_port: int | None) -> dict[str, Any]:
    """What the supervisor starts (its ``local-nodes.json``): the nodes, head first."""
    nodes = [{"name": n.name, "gpus": list(n.gpus), "cpus": n.cpus} for n in spec.nodes]
    return {"cluster": spec.name, "nodes": nodes, "head_port": head_port}


def node_args(node: dict[str, Any], *, head_port: int | None = None) -> dict[str, Any]:
    """``Cluster.add_node`` keyword arguments for one planned node; ``head_port``
    (the head only) pins its GCS port, else Ray picks a free one."""
    args: dict[str, Any] = {
        "num_cpus": int(node["cpus"]),
        "num_gpus": len(node["gpus"]),
        "resources": {node_resource_name(str(node["name"])): NODE_RESOURCE_UNITS},
        "include_dashboard": False,
    }
    if head_port is not None:
        args["gcs_server_port"] = head_port
    return args


def _serve(state_dir: Path) -> int:
    from ray.cluster_utils import Cluster

    plan = json.loads((state_dir / NODES_FILE).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster: Any = None
    try:
        for i, node in enumerate(plan["nodes"]):
            # The raylet inherits this: Ray then hands out the YAML's GPU ids.
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in node["gpus"])
            if i == 0:
                head_args = node_args(node, head_port=plan.get("head_port"))
                cluster = Cluster(initialize_head=True, head_node_args=head_args)
            else:
                cluster.add_node(**node_args(node))
        cluster.wait_for_nodes()
        pids = sorted(
            info.process.pid
            for n in cluster.list_all_nodes()
            for infos in n.all_processes.values()
            for info in infos
        )
        state = {
            "cluster": plan["cluster"],
            "address": cluster.address,
            "supervisor_pid": os.getpid(),
            "pids": pids,
            "nodes": [n["name"] for n in plan["nodes"]],
        }
        tmp = state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_dir / STATE_FILE)
        stop.wait()
        return 0
    except Exception as exc:
        logger.exception("local cluster start-up failed")
        (state_dir / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if cluster is not None:
            cluster.shutdown()
        (state_dir / STATE_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the supervisor (``python -m deploy.local serve``)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the simulated cluster until SIGTERM")
    serve.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return _serve(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
