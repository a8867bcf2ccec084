"""Ray for a search: an embedded local Ray started for the search, or a
connection to a running cluster, with the worker process environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import psutil

from orchestrator.config import ClusterSpec
from orchestrator.errors import FleetError

log = logging.getLogger(__name__)

RAY_NAMESPACE = "ktcluster"
LOOPBACK = "127.0.0.1"
# Ray resolves a node address of 127.0.0.1 to the machine's routable address
# (services.resolve_ip_for_localhost) unless "clusters" are off, as on macOS and
# Windows; then its GCS, raylet, agents and workers listen on loopback only
# (measured with Ray 2.60: every listening socket on 127.0.0.1 or
# ::ffff:127.0.0.1; without it, gcs_server and raylet listen on [::]). The
# variable reaches every process the raylet starts; the driver, which may
# have imported Ray already, reads the constant, which is set for ray.init.
_RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _init_embedded_ray(ray: Any, attempts: int = 2, **kwargs: Any) -> None:
    """``ray.init`` for the embedded Ray, retried once: Ray waits a hard-coded
    30 s for its raylet to register with the GCS, which a loaded 2-core machine
    can miss (ray/_private/node.py, "timed out during startup")."""
    for attempt in range(1, attempts + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:  # Ray raises plain Exceptions/TimeoutErrors on start-up
            ray.shutdown()
            # A failed init may leave its GCS/raylet running, unknown to
            # ray.shutdown(): kill the processes this attempt started (ours only).
            for proc in psutil.Process().children(recursive=True):
                if proc.pid not in before:
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
            if attempt < attempts:
                log.warning("embedded Ray did not start (%s); trying again", exc)
                continue
            raise _ray_start_error(exc) from exc


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray's "no clusters" mode in this process while the embedded Ray starts."""
    from ray._private import ray_constants as constants

    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


def embedded_worker_env(*, user_code: bool) -> dict[str, str]:
    """What every worker process of an embedded Ray inherits from its raylet:
    the worker process settings and, when the search names the user's own
    ``module:attr`` code, a PYTHONPATH with this directory first so it imports.
    (Ray's own Python agents inherit it too, so it is left out otherwise: a
    user's ``aiohttp.py`` in this directory must not shadow theirs.)"""
    from workers.actor import WORKER_PROCESS_ENV

    if not user_code:
        return dict(WORKER_PROCESS_ENV)
    return {**WORKER_PROCESS_ENV, "PYTHONPATH": user_pythonpath()}


def user_pythonpath() -> str:
    """This directory, then the caller's PYTHONPATH."""
    paths = [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(paths)


_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _ray_logging_level() -> int:
    """Ray's Python logging level: ours (WARNING unless ``ktc -v``), never below
    INFO. ``ray.init`` resets the ``ray`` logger to INFO by default, which
    prints "Started a local Ray instance." on every submit."""
    return max(logging.getLogger().getEffectiveLevel(), logging.INFO)


def _ray_start_error(exc: Exception) -> FleetError:
    return FleetError(
        f"could not start the embedded Ray ({type(exc).__name__}: {exc}). Ray needs a few "
        "seconds of CPU and free ports on 127.0.0.1; on a loaded machine try again, or start "
        "Ray yourself (`ray start --head`) and set ray.address in the cluster file."
    )


def connect_ray(cluster: ClusterSpec, *, user_code: bool = False) -> bool:
    """Start an embedded Ray (``local``) or connect to the cluster; True if we started it.

    The embedded Ray gets the cluster file's CPUs and (logical) GPUs and every
    node's label resource, so the same placement rules work on a laptop.
    """
    import ray

    if ray.is_initialized():
        return False
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        # "Token authentication is enabled for this Ray cluster. Set
        # RAY_AUTH_MODE=disabled to opt out": ktcluster keeps it on on purpose
        # (cluster ray.auth, docs/security.md); not the user's to act on. -v shows it.
        logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    if cluster.is_local:
        nodes = cluster.nodes
        # Every node of the file shares this one raylet, so its GPU pool is the
        # sum of the nodes' GPUs (indices are per node). Ray's own GPU ids never
        # reach a worker: each actor gets the file's physical ids from its
        # runtime env. The chief hides every GPU from its own TensorFlow
        # (CUDA_VISIBLE_DEVICES=""), but the raylet inherits the variable and
        # Ray refuses more GPUs than it lists, so it gets a list of the right
        # length for the duration of ray.init.
        total_gpus = sum(len(node.gpus) for node in nodes)
        # The raylet passes its environment on to every worker process it
        # starts, so the worker environment goes in here, once, and the actors
        # need no runtime_env: Ray then starts them from its pool instead of
        # one runtime-env round trip each (16 actors ready in 6.7 s instead of
        # 11.4 s on 2 cores). Each actor sets its own CUDA_VISIBLE_DEVICES in
        # __init__ (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES keeps Ray's off).
        raylet_env = {
            **embedded_worker_env(user_code=user_code),
            **_RAY_LOOPBACK_ENV,
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(total_gpus)),
        }
        saved = {name: os.environ.get(name) for name in raylet_env}
        os.environ.update(raylet_env)
        try:
            with _loopback_only():
                _init_embedded_ray(
                    ray,
                    # "local" always starts a new instance: never attach to a cluster
                    # recorded in RAY_ADDRESS or /tmp/ray/ray_current_cluster.
                    address="local",
                    num_cpus=sum(node.cpus for node in nodes),
                    num_gpus=total_gpus,
                    resources={f"ktc_node_{node.name}": 1000.0 for node in nodes},
                    include_dashboard=False,
                    namespace=RAY_NAMESPACE,
                    log_to_driver=False,
                    logging_level=_ray_logging_level(),
                    # Loopback only: nothing of this Ray is reachable from the
                    # network, whether or not Ray's own token auth is on.
                    _node_ip_address=LOOPBACK,
                )
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return True
    try:
        ray.init(
            address=cluster.ray.address,
            namespace=RAY_NAMESPACE,
            # Workers' output stays in their log files (DIR/logs/ on this
            # machine, Ray's session logs elsewhere), never on the terminal.
            log_to_driver=False,
            logging_level=_ray_logging_level(),
        )
    except ConnectionError as exc:
        raise FleetError(
            f"cluster ray.address: cannot connect to the Ray cluster at {cluster.ray.address!r} "
            f"({exc}); bring it up with `ktc cluster up`, or fix the address"
        ) from exc
    return False
