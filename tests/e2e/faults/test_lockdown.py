"""A real ``ktc submit`` on the embedded Ray, inspected while it runs and after
(issue 12, items 5 and 8): every listening socket of the chief and of its Ray
processes is on loopback, only the fleet's workers get trials (the search token
may not act as a worker, yet the CLI's control RPCs work with it), and every
file of the search directory is private to its owner.

One short sleep search (no TensorFlow), so one Ray start-up for all of it.
"""

from __future__ import annotations

import ipaddress
import socket
import stat

import psutil
import pytest

from orchestrator.errors import PermissionDeniedError
from orchestrator.protocol.client import TrialClient
from tests.e2e.faults.conftest import STARTUP_S, KtcRunner, cluster_yaml, search_yaml
from tests.helpers import readable_by_others, wait_until

pytestmark = pytest.mark.slow


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1
    return address.is_loopback


def _listening(pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP/UDP socket of ``pids``."""
    names: dict[int, str] = {}
    for pid in pids:
        try:
            names[pid] = psutil.Process(pid).name()
        except psutil.Error:
            continue
    out = []
    for conn in psutil.net_connections(kind="inet"):
        bound = conn.status == psutil.CONN_LISTEN or (
            conn.type == socket.SOCK_DGRAM and not conn.raddr
        )
        if conn.pid in names and bound:
            out.append((names[conn.pid], conn.laddr.ip, conn.laddr.port))
    return out


def test_ports_identity_and_file_modes_of_a_real_search(ktc: KtcRunner) -> None:
    run = ktc.submit(
        search_yaml(max_trials=6, epochs=3, epoch_s=0.5, lease_timeout_s=30.0),
        cluster_yaml(),
    )
    search_dir = run.search_dir

    def two_workers_up() -> bool:
        path = search_dir / "workers.jsonl"
        return path.is_file() and len(path.read_text().splitlines()) >= 2

    wait_until(two_workers_up, STARTUP_S, interval_s=0.5, what="two workers to start")

    # --- ports: the chief and every process of its embedded Ray, while it runs.
    pids = {run.pid} | {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
    sockets = _listening(pids)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check is not vacuous
    exposed = [s for s in sockets if not _is_loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"

    # --- identity: the search token may not act as a worker; control works.
    with TrialClient.from_search_dir(search_dir, worker_id="invented-w9") as owner:
        with pytest.raises(
            PermissionDeniedError,
            match=r"this chief hands trials only to the workers its fleet started",
        ):
            owner.create_trial(wait_s=0.1)
        document = owner.status()
        assert {w["worker_id"] for w in document["workers"]} == {"local-w0", "local-w1"}

    # --- modes while the ledger's WAL files exist, then after the run.
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "token", "chief.json"):
        path = search_dir / name
        assert path.exists(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (name, oct(path.stat().st_mode))
    assert stat.S_IMODE(search_dir.stat().st_mode) == 0o700
    assert run.wait(120.0) == 0, run.output()[-4000:]
    assert not readable_by_others(search_dir)
    assert {p.name for p in search_dir.iterdir()} >= {"ledger.db", "token", "audit.jsonl"}
