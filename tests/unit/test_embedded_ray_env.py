"""The embedded Ray's start and this process's environment: what
``connect_ray`` changes, for how long, and when another thread may import.

Ray itself is replaced by a fake ``_init_embedded_ray`` here; the real start
(which processes run, which environment they get) is
tests/integration/test_embedded_ray_lean.py.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.config import parse_cluster
from orchestrator.fleet import embedded_ray

CPU_ONLY = parse_cluster(
    {
        "kind": "cluster",
        "name": "cpu",
        "ray": {"address": "local"},
        "nodes": [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}],
    }
)
WITH_GPUS = parse_cluster(
    {
        "kind": "cluster",
        "name": "gpu",
        "ray": {"address": "local"},
        "nodes": [
            {
                "name": "a",
                "host": "127.0.0.1",
                "cpus": 2,
                "gpus": [0, 1],
                "workers": [{"gpus": [0]}, {"gpus": [1]}],
            }
        ],
    }
)


class _FakeInit:
    """Records what the environment and the event looked like during ray.init."""

    def __init__(self, settled: threading.Event, error: BaseException | None = None) -> None:
        self.settled = settled
        self.error = error
        self.settled_during: bool | None = None
        self.visible_during: str | None = None
        self.malloc_during: str | None = None

    def __call__(self, ray: Any, attempts: int = 2, **kwargs: Any) -> None:
        self.settled_during = self.settled.is_set()
        self.visible_during = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.malloc_during = os.environ.get("MALLOC_ARENA_MAX")
        if self.error is not None:
            raise self.error


@pytest.fixture
def chief_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # what hide_gpus_from_chief sets
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)


def _connect(
    monkeypatch: pytest.MonkeyPatch, cluster: Any, error: BaseException | None = None
) -> tuple[_FakeInit, threading.Event]:
    import ray

    settled = threading.Event()
    fake = _FakeInit(settled, error)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(embedded_ray, "_init_embedded_ray", fake)
    try:
        assert embedded_ray.connect_ray(cluster, environment_settled=settled) is True
    finally:
        assert settled.is_set(), "environment_settled must be set on every path"
    return fake, settled


@pytest.mark.usefixtures("chief_env")
def test_cpu_only_start_changes_no_environment_and_settles_before_ray_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, _ = _connect(monkeypatch, CPU_ONLY)

    # Another thread may import while Ray starts: nothing here touches os.environ.
    assert fake.settled_during is True
    assert fake.visible_during == ""
    # The worker environment goes to the raylet alone (Ray's env_vars).
    assert fake.malloc_during is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "MALLOC_ARENA_MAX" not in os.environ


@pytest.mark.usefixtures("chief_env")
def test_gpus_are_listed_for_ray_init_only_and_settle_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, _ = _connect(monkeypatch, WITH_GPUS)

    # Ray checks num_gpus against this process's variable: it lists 2 GPUs
    # during ray.init, so an importing thread must wait until it is "" again.
    assert fake.settled_during is False
    assert fake.visible_during == "0,1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.usefixtures("chief_env")
def test_a_failed_start_restores_the_environment_and_releases_waiters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RuntimeError, match="raylet would not start"):
        _connect(monkeypatch, WITH_GPUS, RuntimeError("raylet would not start"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_lean_head_skips_components_and_gives_the_raylet_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray._private.utils as ray_utils
    from ray._private.node import Node

    originals = {name: Node.__dict__[name] for name in embedded_ray.SKIPPED_HEAD_COMPONENTS}
    dependency_check = ray_utils.get_dashboard_dependency_error
    seen: dict[str, Any] = {}

    def fake_raylet(self: Any, *args: Any, **kwargs: Any) -> None:
        seen["env_vars"] = dict(self._ray_params.env_vars)
        seen["dashboard_error"] = ray_utils.get_dashboard_dependency_error()

    monkeypatch.setattr(Node, "start_raylet", fake_raylet)
    node = Node.__new__(Node)
    node._ray_params = SimpleNamespace(env_vars={"KEEP": "1"})
    with embedded_ray._lean_head({"MALLOC_ARENA_MAX": "2"}):
        for name in embedded_ray.SKIPPED_HEAD_COMPONENTS:
            assert getattr(node, name)() is None, f"{name} still starts a process"
        node.start_raylet()

    assert seen["env_vars"] == {"KEEP": "1", "MALLOC_ARENA_MAX": "2"}
    # --minimal for the raylet's dashboard agent: no HTTP server, no port 52365.
    assert isinstance(seen["dashboard_error"], ImportError)
    # Everything is put back: a later ray.init in this process is Ray's own.
    for name, method in originals.items():
        assert Node.__dict__[name] is method, f"{name} was not put back"
    assert Node.__dict__["start_raylet"] is fake_raylet
    assert ray_utils.get_dashboard_dependency_error is dependency_check


def test_a_refused_connection_names_token_auth_when_it_is_off_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray says "InvalidAuthToken" only in its C++ log lines; ray.init raises a
    bare ConnectionError. The error names the likely cause when auth is off here."""
    remote = parse_cluster(
        {
            "kind": "cluster",
            "name": "remote",
            "ray": {"address": "10.0.0.1:6379"},
            "nodes": [{"name": "a", "host": "10.0.0.1", "cpus": 2, "cpu_workers": 1}],
        }
    )

    def refuse(**_: Any) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    fake_ray = SimpleNamespace(init=refuse)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(embedded_ray.FleetError) as off:
        embedded_ray._connect_cluster(fake_ray, remote)
    assert "cannot connect to the Ray cluster at '10.0.0.1:6379'" in str(off.value)
    assert "RAY_AUTH_MODE=disabled here sends no token" in str(off.value)
    monkeypatch.delenv("RAY_AUTH_MODE")
    with pytest.raises(embedded_ray.FleetError) as on:
        embedded_ray._connect_cluster(fake_ray, remote)
    assert "RAY_AUTH_MODE" not in str(on.value)
