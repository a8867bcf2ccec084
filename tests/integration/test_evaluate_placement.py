"""The evaluation actor on a real embedded Ray with logical GPUs: it takes the first
GPU slot's shape and sees exactly that slot's physical GPU, carries the worker
process environment, and an actor Ray cannot place is reported with the reason
instead of pending silently."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from orchestrator.config import ClusterSpec
from orchestrator.errors import FleetError
from orchestrator.fleet.evaluator import pick_slot, start_actor
from tests.e2e.conftest import private_ray_tmpdir

pytestmark = pytest.mark.slow

CLUSTER = ClusterSpec.model_validate(
    {
        "name": "gpubox",
        "ray": {"address": "local"},
        "nodes": [
            {
                "name": "box",
                "host": "127.0.0.1",
                "cpus": 2,
                "gpus": [0, 1],
                "workers": [{"cpus": 1}, {"gpus": [1]}],
            }
        ],
    }
)


@pytest.fixture(scope="module")
def embedded_ray() -> Iterator[bool]:
    """The embedded Ray ``ktc evaluate`` starts for ``CLUSTER``, shared by this
    module's tests (stopped after them)."""
    import ray

    from orchestrator.fleet.embedded_ray import connect_ray

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        monkeypatch.setenv("RAY_TMPDIR", private_ray_tmpdir())
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        started = connect_ray(CLUSTER)
        try:
            yield started
        finally:
            ray.shutdown()


def test_the_actor_takes_the_gpu_slot_and_sees_only_its_gpu(embedded_ray: bool) -> None:
    import ray

    slot = pick_slot(CLUSTER)
    assert (slot.worker_id, slot.gpus) == ("box-w1", (1,))
    actor, where = start_actor(
        CLUSTER,
        slot,
        name="ktc-eval-test",
        env_from_raylet=embedded_ray,
        user_code=False,
        start_timeout_s=60,
    )
    try:
        assert where["worker_slot"] == "box-w1" and where["node"] == "box"
        assert where["cuda_visible_devices"] == "1"
        assert where["gpus"] == [1]
    finally:
        ray.kill(actor)


def test_an_actor_ray_cannot_place_says_why(embedded_ray: bool) -> None:
    slot = replace(pick_slot(CLUSTER), node="ghost")
    with pytest.raises(FleetError, match=r"did not start within 3 s: no Ray node carries"):
        start_actor(
            CLUSTER,
            slot,
            name="ktc-eval-ghost",
            env_from_raylet=embedded_ray,
            user_code=False,
            start_timeout_s=3,
        )
