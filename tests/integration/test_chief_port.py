"""Two chiefs never share a port silently (gRPC so_reuseport is off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.config import parse_cluster
from orchestrator.errors import KtClusterError
from tests.helpers import float_space, make_search


def test_second_chief_on_the_same_port_is_refused(tmp_path: Path) -> None:
    search = make_search({"type": "random", "max_trials": 1})
    first = Chief.create(search, tmp_path / "a", initial_space=float_space())
    port = first.start().port
    try:
        cluster = parse_cluster(
            {"chief": {"port": port}, "nodes": [{"name": "local", "cpus": 2, "cpu_workers": 1}]}
        )
        second = Chief.create(search, tmp_path / "b", cluster=cluster, initial_space=float_space())
        try:
            with pytest.raises(
                KtClusterError, match=rf"could not bind 127\.0\.0\.1:{port}.*in use"
            ):
                second.start()
        finally:
            second.close()
    finally:
        first.cancel()
        first.close()


def test_a_resume_that_cannot_bind_changes_nothing(tmp_path: Path) -> None:
    """Validate, then commit: the "resumed" event is appended only once the
    resumed chief serves, so a resume refused for a taken port leaves the
    ledger as it was, and a later resume works."""
    from orchestrator.chief.ledger import Ledger
    from orchestrator.protocol.trials import SearchState

    search = make_search({"type": "random", "max_trials": 2})
    directory = tmp_path / "search"
    first = Chief.create(search, directory, initial_space=float_space())
    first.start()
    first.interrupt(requeue_running=True)
    first.close()

    def rows() -> list[tuple[int, str]]:
        ledger = Ledger(directory / "ledger.db", read_only=True)
        try:
            return [(e.seq, e.kind.value) for e in ledger.events()]
        finally:
            ledger.close()

    before = rows()
    holder = Chief.create(search, tmp_path / "holder", initial_space=float_space())
    port = holder.start().port
    try:
        taken = parse_cluster(
            {"chief": {"port": port}, "nodes": [{"name": "local", "cpus": 2, "cpu_workers": 1}]}
        )
        refused = Chief.resume(directory, cluster=taken)
        try:
            with pytest.raises(KtClusterError, match=rf"could not bind 127\.0\.0\.1:{port}"):
                refused.start()
        finally:
            refused.close()
    finally:
        holder.cancel()
        holder.close()
    assert rows() == before

    again = Chief.resume(directory)
    try:
        again.start()
        assert again.broker.state is SearchState.RUNNING
        assert "resumed after interrupted" in again.broker.message
        assert len(rows()) == len(before) + 1
    finally:
        again.interrupt(requeue_running=True)
        again.close()
