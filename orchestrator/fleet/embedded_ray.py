"""Ray for a search: an embedded local Ray started for the search, or a
connection to a running cluster, with the worker process environment.

The embedded Ray is lean: ``ray.init`` starts, even with
``include_dashboard=False``, three head components that a search on this
machine never uses, and it waits on one of them (Ray 2.60,
``ray/_private/node.py``, ``start_head_processes`` and ``start_ray_processes``):

- **the API server** (``dashboard.py`` with only its usage-stats module):
  ``ray.init`` waits until it has registered its URL, 1.2 to 3 s on a 2-core
  machine. Nothing of ours asks an embedded Ray's dashboard, state or job
  APIs; a cluster's dashboard is the cluster's (``ray.dashboard``).
- **the autoscaler monitor**: an embedded Ray has nothing to scale (the fleet
  calls ``request_resources`` only on clusters). It also outlives the full
  second ``ray.shutdown`` gives it after SIGTERM, and is then SIGKILLed.
- **the log monitor**: it streams worker output to the driver, which
  ``log_to_driver=False`` discards; each worker writes its own log file
  (``DIR/logs``, or Ray's session logs).

:func:`connect_ray` starts Ray without them. Each is skipped by name; if a
later Ray renames one, that one starts again as before (and a test fails).
The GCS, the raylet and the two agents the raylet starts itself (its
dashboard agent, which hosts the metrics agent, and the runtime-env agent)
still run: the raylet needs them. The dashboard agent runs ``--minimal``
(no HTTP server: nothing would call it). One cost: its event module asks
Ray's key-value store for the missing dashboard's address once a second and
logs the failure to Ray's own ``dashboard_agent.log`` in the session's log
folder (``/tmp/ray/session_*/logs``), never to the user's terminal or ``DIR``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import psutil

from orchestrator.config import ClusterSpec, SearchSpec
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
        except KeyboardInterrupt:
            _stop_failed_start(ray, before)
            raise
        except Exception as exc:  # Ray raises plain Exceptions/TimeoutErrors on start-up
            _stop_failed_start(ray, before)
            if attempt < attempts:
                log.warning("embedded Ray did not start (%s); trying again", exc)
                continue
            raise _ray_start_error(exc) from exc


def _stop_failed_start(ray: Any, before: set[int]) -> None:
    """After a failed or interrupted ``ray.init``: stop what it started."""
    ray.shutdown()
    # A failed init may leave its GCS/raylet running, unknown to
    # ray.shutdown(): kill the processes this attempt started (ours only).
    for proc in psutil.Process().children(recursive=True):
        if proc.pid not in before:
            with contextlib.suppress(psutil.Error):
                proc.kill()


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


# Node methods whose process an embedded run does without (module docstring).
SKIPPED_HEAD_COMPONENTS = ("start_api_server", "start_monitor", "start_log_monitor")


@contextlib.contextmanager
def _lean_head(raylet_env: dict[str, str]) -> Iterator[None]:
    """While the embedded Ray starts: skip the head components it does not need
    (module docstring), and start the raylet with ``raylet_env`` on top of this
    process's environment, which stays as it is (Ray's ``env_vars`` parameter,
    which ``ray.init`` does not pass on)."""
    import ray._private.utils as ray_utils
    from ray._private.node import Node

    # Only methods Node defines itself are replaced, so each can be put back.
    saved = {
        name: Node.__dict__[name]
        for name in (*SKIPPED_HEAD_COMPONENTS, "start_raylet")
        if name in Node.__dict__
    }
    if "start_raylet" not in saved:
        raise FleetError(
            "the installed Ray has no ray._private.node.Node.start_raylet; ktcluster "
            f"starts an embedded Ray through it (tested with Ray 2.60, found {_ray_version()}). "
            "Install a Ray version from pyproject.toml, or start Ray yourself "
            "(`ray start --head`) and set ray.address in the cluster file."
        )
    start_raylet = saved["start_raylet"]

    def skip(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def start_raylet_with_env(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._ray_params.env_vars = {**(self._ray_params.env_vars or {}), **raylet_env}
        # The raylet's dashboard agent gets --minimal when Ray reports missing
        # dashboard dependencies: then it serves no HTTP (for a dashboard that
        # does not run), and does not fight over its fixed port 52365 with
        # every other Ray on the machine (3.3 s of bind retries before the
        # raylet registered, measured with a second Ray running).
        saved_check = ray_utils.get_dashboard_dependency_error
        ray_utils.get_dashboard_dependency_error = _no_dashboard
        try:
            return start_raylet(self, *args, **kwargs)
        finally:
            ray_utils.get_dashboard_dependency_error = saved_check

    for name in saved:
        setattr(Node, name, start_raylet_with_env if name == "start_raylet" else skip)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def _no_dashboard() -> ImportError:
    return ImportError("ktcluster's embedded Ray runs no dashboard")


def _ray_version() -> str:
    import ray

    return str(getattr(ray, "__version__", "unknown"))


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


def search_uses_user_code(search: SearchSpec) -> bool:
    """True when the search names the user's own code (a ``module:attr``
    hypermodel or dataset function), which worker processes must import."""
    return not search.hypermodel.is_builtin or (
        search.dataset is not None and search.dataset.is_user_function
    )


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


def connect_ray(
    cluster: ClusterSpec,
    *,
    user_code: bool = False,
    environment_settled: threading.Event | None = None,
) -> bool:
    """Start an embedded Ray (``local``) or connect to the cluster; True if we started it.

    The embedded Ray gets the cluster file's CPUs and (logical) GPUs and every
    node's label resource, so the same placement rules work on a laptop. It
    starts lean (the module docstring).

    ``environment_settled`` is set once nothing of this call changes
    ``os.environ`` any more, so that another thread may import meanwhile
    (TensorFlow reads the environment, and a ``setenv`` racing a ``getenv``
    is undefined behaviour in C): at once, unless the embedded Ray has GPUs,
    whose count Ray checks against this process's ``CUDA_VISIBLE_DEVICES``;
    then when this call returns. It is set on every path, errors included.
    """
    settled = environment_settled or threading.Event()
    try:
        return _connect_ray(cluster, user_code=user_code, settled=settled)
    finally:
        settled.set()


def _connect_ray(cluster: ClusterSpec, *, user_code: bool, settled: threading.Event) -> bool:
    import ray

    if ray.is_initialized():
        return False
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        # "Token authentication is enabled for this Ray cluster. Set
        # RAY_AUTH_MODE=disabled to opt out": ktcluster keeps it on on purpose
        # (cluster ray.auth, docs/security.md); not the user's to act on. -v shows it.
        logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    if not cluster.is_local:
        settled.set()  # a connection changes no environment variable
        return _connect_cluster(ray, cluster, user_code=user_code)
    nodes = cluster.nodes
    # Every node of the file shares this one raylet, so its GPU pool is the
    # sum of the nodes' GPUs (indices are per node). Ray's own GPU ids never
    # reach a worker: each actor gets the file's physical ids from its
    # runtime env. The chief hides every GPU from its own TensorFlow
    # (CUDA_VISIBLE_DEVICES=""), but Ray refuses more GPUs than this
    # process's variable lists, so it gets a list of the right length for
    # the duration of ray.init (only when there are GPUs: "" is the chief's).
    total_gpus = sum(len(node.gpus) for node in nodes)
    visible = ",".join(str(i) for i in range(total_gpus))
    # The raylet passes its environment on to every worker process it
    # starts, so the worker environment goes in here, once, and the actors
    # need no runtime_env: Ray then starts them from its pool instead of
    # one runtime-env round trip each (16 actors ready in 6.7 s instead of
    # 11.4 s on 2 cores). Each actor sets its own CUDA_VISIBLE_DEVICES in
    # __init__ (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES keeps Ray's off).
    raylet_env = {
        **embedded_worker_env(user_code=user_code),
        **_RAY_LOOPBACK_ENV,
        "CUDA_VISIBLE_DEVICES": visible,
    }
    saved_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if total_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    else:
        settled.set()
    try:
        with _loopback_only(), _lean_head(raylet_env):
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
        if total_gpus:
            if saved_visible is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved_visible
    return True


def local_working_dir(cluster: ClusterSpec, *, user_code: bool) -> str | None:
    """``ray.working_dir`` when it is a folder on this machine that user code needs.

    Ray uploads a local folder only for a whole job (``ray.init``'s runtime env:
    "Passing directories ... to be dynamically uploaded is only supported at the
    job level"); the actors then inherit it. A URI (``s3://...``) may go to each
    actor instead (:func:`actor_working_dir`)."""
    value = cluster.ray.working_dir
    if not user_code or value is None or "://" in value:
        return None
    return value


def actor_working_dir(cluster: ClusterSpec, *, user_code: bool) -> str | None:
    """``ray.working_dir`` when it is a URI that an actor's own runtime env may name."""
    value = cluster.ray.working_dir
    return value if user_code and value is not None and "://" in value else None


def _connect_cluster(ray: Any, cluster: ClusterSpec, *, user_code: bool = False) -> bool:
    working_dir = local_working_dir(cluster, user_code=user_code)
    try:
        ray.init(
            address=cluster.ray.address,
            namespace=RAY_NAMESPACE,
            # The actors this driver starts inherit it (local_working_dir).
            runtime_env={"working_dir": working_dir} if working_dir else None,
            # Workers' output stays in their log files (DIR/logs/ on this
            # machine, Ray's session logs elsewhere), never on the terminal.
            log_to_driver=False,
            logging_level=_ray_logging_level(),
        )
    except ConnectionError as exc:
        raise FleetError(
            f"cluster ray.address: cannot connect to the Ray cluster at {cluster.ray.address!r} "
            f"({exc}); bring it up with `ktc cluster up`, or fix the address"
            f"{_auth_hint()}"
        ) from exc
    return False


def _auth_hint() -> str:
    """Why a running cluster may have refused this machine: Ray's token auth is
    off here (Ray says so only in its C++ log lines, as InvalidAuthToken)."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "disabled":
        return ""
    return (
        ". If the cluster runs, it may have refused this machine: RAY_AUTH_MODE=disabled "
        "here sends no token, and a cluster with token auth (ktcluster's default) refuses "
        "that. Unset RAY_AUTH_MODE (or set it to token) and give the head's token in "
        "RAY_AUTH_TOKEN or ~/.ray/auth_token"
    )
