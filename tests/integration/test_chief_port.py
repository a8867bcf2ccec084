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
