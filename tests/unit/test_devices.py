"""Device plans: CUDA visibility, TF memory growth / caps, CPU threads, idempotency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from orchestrator.errors import KtClusterError
from workers.devices import DeviceConfigurator, DevicePlan, apply_cuda_visibility

REPO = Path(__file__).resolve().parents[2]


def test_plan_maps_gpus_to_cuda_visible_devices() -> None:
    assert DevicePlan(gpus=(2, 3)).cuda_visible_devices == "2,3"
    assert DevicePlan(gpus=()).cuda_visible_devices == ""
    slot = SimpleNamespace(gpus=(1,), memory_cap_mb=4096, cpus=2.0)
    assert DevicePlan.from_slot(slot) == DevicePlan((1,), 4096, 2.0)


def test_apply_sets_the_variable_when_tensorflow_is_not_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    env: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    apply_cuda_visibility(DevicePlan(gpus=(1, 3)), env)
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    apply_cuda_visibility(DevicePlan(), env)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_apply_refuses_a_change_after_tensorflow_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", SimpleNamespace())
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    apply_cuda_visibility(DevicePlan(gpus=(0,)), env)  # same value: fine
    with pytest.raises(
        KtClusterError,
        match=r"TensorFlow was imported while CUDA_VISIBLE_DEVICES='0', but this worker must see "
        r"'2,3' \(GPUs \[2, 3\]\); call apply_cuda_visibility\(\) before",
    ):
        apply_cuda_visibility(DevicePlan(gpus=(2, 3)), env)


class FakeTF:
    """The slice of the ``tensorflow`` module DeviceConfigurator touches."""

    def __init__(self, gpus: int) -> None:
        self.gpus = [f"/physical_device:GPU:{i}" for i in range(gpus)]
        self.config = mock.MagicMock()
        self.config.list_physical_devices.return_value = self.gpus
        self.config.LogicalDeviceConfiguration = lambda memory_limit: ("logical", memory_limit)
        self.distribute = mock.MagicMock()


def test_gpu_workers_get_memory_growth_on_every_gpu() -> None:
    tf = FakeTF(gpus=2)
    setup = DeviceConfigurator(tf).configure(DevicePlan(gpus=(4, 5), cpus=2))
    growth = tf.config.experimental.set_memory_growth
    assert growth.call_args_list == [mock.call(gpu, True) for gpu in tf.gpus]
    tf.config.set_logical_device_configuration.assert_not_called()
    tf.config.threading.set_intra_op_parallelism_threads.assert_not_called()
    assert (setup.visible_gpus, setup.memory_growth, setup.memory_cap_mb) == (2, True, None)
    assert setup.strategy() is tf.distribute.MirroredStrategy.return_value
    assert setup.strategy() is setup.strategy()  # created once
    tf.distribute.MirroredStrategy.assert_called_once_with()


def test_packed_workers_get_a_memory_cap_and_no_growth() -> None:
    tf = FakeTF(gpus=1)
    setup = DeviceConfigurator(tf).configure(DevicePlan(gpus=(0,), memory_cap_mb=3000))
    tf.config.set_logical_device_configuration.assert_called_once_with(
        tf.gpus[0], [("logical", 3000)]
    )
    tf.config.experimental.set_memory_growth.assert_not_called()
    assert (setup.memory_growth, setup.memory_cap_mb) == (False, 3000)
    assert setup.strategy() is tf.distribute.get_strategy.return_value


def test_cpu_workers_limit_threads_and_repeat_calls_are_no_ops() -> None:
    tf = FakeTF(gpus=0)
    configurator = DeviceConfigurator(tf)
    plan = DevicePlan(cpus=2.5)
    setup = configurator.configure(plan)
    assert configurator.configure(DevicePlan(cpus=2.5)) is setup
    tf.config.threading.set_intra_op_parallelism_threads.assert_called_once_with(2)
    tf.config.threading.set_inter_op_parallelism_threads.assert_called_once_with(2)
    assert setup.intra_op_threads == 2
    with pytest.raises(KtClusterError, match=r"already configured for DevicePlan.*start a new"):
        configurator.configure(DevicePlan(cpus=1))


def test_runtime_already_initialized_is_explained() -> None:
    tf = FakeTF(gpus=1)
    tf.config.experimental.set_memory_growth.side_effect = RuntimeError(
        "Physical devices cannot be modified after being initialized"
    )
    with pytest.raises(
        KtClusterError,
        match=r"runtime is already initialized in this process \(Physical devices cannot be "
        r"modified after being initialized\).*call configure_tensorflow\(\) before creating",
    ):
        DeviceConfigurator(tf).configure(DevicePlan(gpus=(0,)))


def _run(code: str, env: dict[str, str] | None = None) -> Any:
    import os

    full_env = {**os.environ, **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_real_tensorflow_in_a_fresh_process() -> None:
    """Env mapping, CPU thread limits and idempotency against the real TF (CPU-only here)."""
    result = _run(
        """
        import json, os
        from orchestrator.errors import KtClusterError
        from workers.devices import DevicePlan, apply_cuda_visibility, configure_tensorflow
        apply_cuda_visibility(DevicePlan(gpus=(2, 3)))
        mapped = os.environ["CUDA_VISIBLE_DEVICES"]
        plan = DevicePlan(gpus=(), cpus=1)
        apply_cuda_visibility(plan)
        setup = configure_tensorflow(plan)
        import tensorflow as tf
        try:
            apply_cuda_visibility(DevicePlan(gpus=(1,)))
            refused = False
        except KtClusterError:
            refused = True
        print(json.dumps({
            "mapped": mapped,
            "cpu_env": os.environ["CUDA_VISIBLE_DEVICES"],
            "same": configure_tensorflow(plan) is setup,
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "strategy": type(setup.strategy()).__name__,
            "refused": refused,
        }))
        """,
        env={"CUDA_VISIBLE_DEVICES": "0,1,2,3", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result == {
        "mapped": "2,3",
        "cpu_env": "",
        "same": True,
        "intra": 1,
        "inter": 1,
        "gpus": 0,
        "strategy": "_DefaultDistributionStrategy",
        "refused": True,
    }


def test_worker_process_env_pins_gpus_and_caps_malloc_arenas() -> None:
    """Every worker actor runs with its YAML GPUs, Ray's GPU masking off, and
    glibc's malloc arenas capped (the worker-memory fix in BENCHMARKS.md)."""
    from orchestrator.config import WorkerSlot, parse_cluster
    from workers.actor import actor_env

    cluster = parse_cluster(
        {
            "nodes": [
                {
                    "name": "n",
                    "cpus": 4,
                    "gpus": [0, 1, 2, 3],
                    "workers": [{"gpus": [2, 3]}, {"cpus": 1}],
                }
            ]
        }
    )
    gpu_slot, cpu_slot = cluster.worker_slots()

    def env(slot: WorkerSlot) -> dict[str, str]:
        return actor_env(slot)

    assert env(gpu_slot)["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env(cpu_slot)["CUDA_VISIBLE_DEVICES"] == ""
    assert env(gpu_slot)["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] == "1"
    assert env(gpu_slot)["MALLOC_ARENA_MAX"] == "2"


def test_embedded_raylet_env_adds_this_directory_only_for_user_code(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from orchestrator.fleet.embedded_ray import embedded_worker_env
    from workers.actor import WORKER_PROCESS_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/opt/extra")
    assert embedded_worker_env(user_code=False) == WORKER_PROCESS_ENV
    with_code = embedded_worker_env(user_code=True)
    assert with_code["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/opt/extra"]
    assert {k: v for k, v in with_code.items() if k != "PYTHONPATH"} == WORKER_PROCESS_ENV
