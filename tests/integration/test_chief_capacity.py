"""Connections at scale (issue 13): the chief raises its open-file limit, says
in its log (``chief.log``) how many workers that supports, and keeps the
terminal as quiet as it was."""

from __future__ import annotations

import logging
import resource
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.server import RESERVED_FDS
from tests.helpers import float_space, make_search


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    """The soft RLIMIT_NOFILE lowered to 512 (a process may always lower it), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_chief_raises_its_open_file_limit_and_logs_what_it_supports(
    start_chief: Callable[..., tuple[Any, Any]],
    search_dir: Path,
    low_soft_limit: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    terminal = logging.StreamHandler()  # stands in for the CLI's: WARNING and above
    root.addHandler(terminal)
    previous_level = root.level
    root.setLevel(logging.WARNING)
    try:
        chief, _ = start_chief(make_search(), initial_space=float_space())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        assert soft == expected > 512
        log_text = (search_dir / "chief.log").read_text()
        assert (
            f"open-file limit {soft} (raised from 512, hard limit {hard}): room for about "
            f"{soft - RESERVED_FDS} worker connections"
        ) in log_text
        assert "listening on" in log_text
        assert stat.S_IMODE((search_dir / "chief.log").stat().st_mode) == 0o600
        assert "open-file limit" not in capsys.readouterr().err  # not on the terminal
        chief.close()
        assert logging.getLogger("orchestrator").level == logging.NOTSET
        assert terminal.level == logging.NOTSET
    finally:
        root.removeHandler(terminal)
        root.setLevel(previous_level)


def test_space_calls_waiting_for_the_oracle_never_starve_its_holder(
    start_chief: Callable[..., tuple[Any, Any]],
) -> None:
    """A fleet starting: every worker asks for the space while others ask for
    trials. GetSpace waits for the oracle gate; the CreateTrial holding the gate
    must still get a thread to release it (no deadlock), so all are answered."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.protocol.client import AssignmentKind, TrialClient

    search = make_search({"type": "random", "max_trials": 40, "seed": 1})
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=1.0)
    clients = [TrialClient(ep.address, ep.token, worker_id=f"w{i}") for i in range(8)]

    def space(i: int) -> Any:
        return clients[i % 8].get_space()

    def trial(i: int) -> Any:
        return clients[i % 8].create_trial(wait_s=2.0)

    with ThreadPoolExecutor(max_workers=48) as pool:
        spaces = [pool.submit(space, i) for i in range(40)]
        trials = [pool.submit(trial, i) for i in range(8)]
        more_spaces = [pool.submit(space, i) for i in range(40)]
        answers = [f.result(timeout=30) for f in trials]
        for f in spaces + more_spaces:
            f.result(timeout=30)
    assert sum(a.kind is AssignmentKind.TRIAL for a in answers) >= 1
    for client in clients:
        client.close()


def test_a_chief_that_cannot_bind_leaves_logging_as_it_was(tmp_path: Path) -> None:
    import socket

    from orchestrator.chief.chief import Chief
    from orchestrator.config import ClusterSpec, default_cluster
    from orchestrator.errors import KtClusterError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = default_cluster().model_dump()
        cluster = ClusterSpec.model_validate({**base, "chief": {**base["chief"], "port": port}})
        chief = Chief.create(make_search(), tmp_path / "s", cluster=cluster)
        handlers = list(logging.getLogger("orchestrator").handlers)
        with pytest.raises(KtClusterError, match="could not bind"):
            chief.start()
    assert logging.getLogger("orchestrator").handlers == handlers
    assert logging.getLogger("orchestrator").level == logging.NOTSET
    chief.close()


def test_keepalive_closes_the_connection_of_a_worker_that_stopped_answering(
    search_dir: Path,
) -> None:
    """A worker whose machine died answers nothing, not even gRPC's pings: the
    chief's keepalive closes its connection (here with short timers; the real
    ones are in docs/operations.md). A frozen process (SIGSTOP) stands in for it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from orchestrator.chief.chief import Chief
    from orchestrator.chief.server import Keepalive

    chief = Chief.create(make_search(), search_dir, initial_space=float_space())
    chief.keepalive = Keepalive(time_ms=500, timeout_ms=500, min_client_ping_ms=500)
    ep = chief.start()
    script = (
        "import sys, time\n"
        "from orchestrator.protocol.client import TrialClient\n"
        "c = TrialClient(sys.argv[1], sys.argv[2])\n"
        "c.search_state()\n"
        "print('connected', flush=True)\n"
        "time.sleep(120)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script, ep.address, ep.token],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )

    def connections() -> int:
        return sum(
            1
            for c in psutil.Process().net_connections(kind="tcp")
            if c.laddr and c.laddr.port == ep.port and c.status == psutil.CONN_ESTABLISHED
        )

    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "connected"
        assert connections() == 1
        worker.send_signal(signal.SIGSTOP)  # answers nothing from now on
        deadline = time.monotonic() + 20
        while connections() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert connections() == 0, "the chief kept the frozen worker's connection"
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.kill()
        worker.wait(10)
        chief.close()
