"""A worker process's devices: which GPUs it sees and how TensorFlow uses them.

Two steps, in this order, once per process:

1. :func:`apply_cuda_visibility` sets ``CUDA_VISIBLE_DEVICES`` to exactly the
   worker's physical GPUs (``""`` for CPU workers: Ray does not mask GPUs for
   ``num_gpus=0`` actors). CUDA reads it when TF first initializes its GPUs, so
   it must happen before TensorFlow is imported.
2. :func:`configure_tensorflow` imports TF and sets, per visible GPU, either
   memory growth or, for packed workers, a fixed per-process memory cap.
   TF cannot combine them: a GPU with a logical (virtual) device configuration
   refuses ``set_memory_growth`` ("Cannot set memory growth on device when
   virtual devices configured", tensorflow/python/eager/context.py) and ignores
   ``allow_growth``. A capped worker therefore uses the logical configuration
   only, which allocates up to the cap and never more. CPU workers limit TF's
   thread pools to their CPU share.

Both are process-global and cannot change once TF has initialized its runtime.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import KtClusterError

logger = logging.getLogger(__name__)

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class DevicePlan:
    """What one worker may use: physical GPU indices, an optional memory cap, CPUs."""

    gpus: tuple[int, ...] = ()
    memory_cap_mb: int | None = None
    cpus: float = 1.0

    @classmethod
    def from_slot(cls, slot: Any) -> DevicePlan:
        """The plan of an ``orchestrator.config.WorkerSlot`` (its gpus, memory cap, cpus)."""
        return cls(tuple(int(g) for g in slot.gpus), slot.memory_cap_mb, float(slot.cpus))

    @property
    def cuda_visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value: ``"2,3"``, or ``""`` for a CPU worker."""
        return ",".join(str(gpu) for gpu in self.gpus)


@dataclass(frozen=True)
class DeviceSetup:
    """What :func:`configure_tensorflow` did; :meth:`strategy` gives the training strategy."""

    plan: DevicePlan
    visible_gpus: int
    memory_growth: bool
    memory_cap_mb: int | None
    intra_op_threads: int | None
    inter_op_threads: int | None
    _tf: Any = field(default=None, repr=False, compare=False)
    _strategy: list[Any] = field(default_factory=list, repr=False, compare=False)

    def strategy(self) -> Any:
        """``MirroredStrategy`` over every visible GPU when there are several, else the default.

        Created once and reused: a strategy owns device state for the process.
        """
        if not self._strategy:
            tf = self._tf
            if self.visible_gpus > 1:
                self._strategy.append(tf.distribute.MirroredStrategy())
            else:
                self._strategy.append(tf.distribute.get_strategy())
        return self._strategy[0]


def apply_cuda_visibility(
    plan: DevicePlan, environ: MutableMapping[str, str] | None = None
) -> None:
    """Set ``CUDA_VISIBLE_DEVICES`` to the plan's GPUs; call before importing TensorFlow.

    Raises :class:`KtClusterError` when TF is already imported with a different
    value: TF would keep the GPUs it saw, and the worker could use another
    worker's GPU.
    """
    env = os.environ if environ is None else environ
    wanted = plan.cuda_visible_devices
    current = env.get(CUDA_VISIBLE_DEVICES)
    if "tensorflow" in sys.modules and current != wanted:
        raise KtClusterError(
            f"worker devices: TensorFlow was imported while {CUDA_VISIBLE_DEVICES}="
            f"{current!r}, but this worker must see {wanted!r} (GPUs {list(plan.gpus)}); "
            "call apply_cuda_visibility() before anything imports tensorflow (keep TF imports "
            "out of module level in the worker), or start a fresh process."
        )
    env[CUDA_VISIBLE_DEVICES] = wanted


class DeviceConfigurator:
    """Configures TF at most once; :func:`configure_tensorflow` uses one per process.

    ``tf`` may be injected (tests pass a fake with ``config`` and ``distribute``).
    """

    def __init__(self, tf: Any | None = None) -> None:
        self._tf = tf
        self._lock = threading.Lock()
        self._setup: DeviceSetup | None = None

    def configure(self, plan: DevicePlan) -> DeviceSetup:
        """Apply ``plan``; a second call with the same plan returns the first setup."""
        with self._lock:
            if self._setup is not None:
                if self._setup.plan != plan:
                    raise KtClusterError(
                        f"worker devices: TensorFlow in this process is already configured for "
                        f"{self._setup.plan}, got {plan}; device settings are process-global "
                        "and fixed once set: start a new worker process for another plan."
                    )
                return self._setup
            self._setup = self._apply(plan)
            return self._setup

    def _apply(self, plan: DevicePlan) -> DeviceSetup:
        tf: Any = self._tf if self._tf is not None else _import_tensorflow()
        gpus = list(tf.config.list_physical_devices("GPU"))
        if len(gpus) != len(plan.gpus):
            logger.warning(
                "worker plans GPUs %s but TensorFlow sees %d GPU(s) with %s=%r",
                list(plan.gpus),
                len(gpus),
                CUDA_VISIBLE_DEVICES,
                os.environ.get(CUDA_VISIBLE_DEVICES),
            )
        threads: int | None = None
        try:
            for gpu in gpus:
                if plan.memory_cap_mb is not None:
                    tf.config.set_logical_device_configuration(
                        gpu,
                        [tf.config.LogicalDeviceConfiguration(memory_limit=plan.memory_cap_mb)],
                    )
                else:
                    tf.config.experimental.set_memory_growth(gpu, True)
            if not gpus:
                threads = max(1, int(plan.cpus))
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as exc:
            raise KtClusterError(
                f"worker devices: TensorFlow's runtime is already initialized in this process "
                f"({exc}), so memory growth, memory caps and thread limits can no longer be set; "
                "call configure_tensorflow() before creating any tensor, model or dataset."
            ) from exc
        return DeviceSetup(
            plan=plan,
            visible_gpus=len(gpus),
            memory_growth=bool(gpus) and plan.memory_cap_mb is None,
            memory_cap_mb=plan.memory_cap_mb if gpus else None,
            intra_op_threads=threads,
            inter_op_threads=threads,
            _tf=tf,
        )


def _import_tensorflow() -> Any:
    import tensorflow

    return tensorflow


_process_configurator = DeviceConfigurator()


def configure_tensorflow(plan: DevicePlan) -> DeviceSetup:
    """Import TF and configure this process's devices per ``plan`` (idempotent).

    GPUs: memory growth, or only a logical device with ``memory_cap_mb`` when
    a cap is set. CPU-only: intra- and inter-op threads = ``max(1, int(cpus))``.
    Raises :class:`KtClusterError` if TF was initialized before, or if called
    again with a different plan.
    """
    return _process_configurator.configure(plan)
