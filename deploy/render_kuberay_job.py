"""``ktc cluster render --format kuberay-job --search SEARCH.yaml``: a KubeRay
``RayJob`` that runs the chief inside the cluster, and the ``ConfigMap`` that
carries its two files.

Two documents, applied together (``kubectl apply -f``):

- a ``ConfigMap`` named like the job, holding ``search.yaml`` (the user's file,
  byte for byte: comments stay) and ``cluster.yaml`` (the cluster spec as
  validated, with ``ray.address: auto``: inside the cluster the chief joins the
  Ray cluster it runs on, whatever address the user's machine reaches it by);
- a ``RayJob`` whose ``rayClusterSpec`` is exactly the ``--format kuberay``
  RayCluster's ``spec`` (:func:`deploy.render_kuberay.raycluster_spec`) plus
  the ConfigMap mounted read-only in the head pod at :data:`JOB_FILES_DIR`.
  Its entrypoint makes the storage root (``python -m orchestrator.storage``,
  0700) and runs ``ktc submit`` in the foreground with ``--no-progress`` and
  ``--dir <storage>/<search name>-<render time>``.

Why a ConfigMap and not the job's ``runtime_env``: a RayJob's runtime env can
only name remote ``working_dir`` URIs (the submitter runs in the cluster and has
no copy of the user's folder), so the files would have to travel as environment
variables, which Ray passes on to every worker actor of the job. A ConfigMap is
visible (``kubectl get configmap NAME -o yaml``), is limited to 1 MiB like a
config file, and reaches only the head pod, where Ray runs a job's driver.

Why the render time names the search directory: rendering again makes a new
search; applying the same file twice finds its directory taken and ``ktc
submit`` refuses, instead of mixing two searches (resume it with ``ktc resume``).
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from deploy.render_kuberay import (
    API_VERSION,
    MANAGED_BY,
    MAX_RAYJOB_NAME,
    k8s_name,
    k8s_resource_name,
    raycluster_spec,
)
from deploy.render_options import RenderOptions
from orchestrator.config import spec_data
from orchestrator.config.cluster import ClusterSpec
from orchestrator.config.hosts import is_loopback
from orchestrator.config.loader import load_search_document, parse_cluster
from orchestrator.config.yaml_source import YamlDocument
from orchestrator.errors import DeployError
from orchestrator.job_package import search_entrypoint
from orchestrator.storage import search_dir_name

JOB_KIND = "RayJob"
JOB_FILES_DIR = "/etc/ktcluster/job"
JOB_FILES_VOLUME = "ktc-job"
SEARCH_FILE = "search.yaml"
CLUSTER_FILE = "cluster.yaml"
MAX_CONFIGMAP_BYTES = 1024 * 1024  # Kubernetes refuses a larger ConfigMap
_DATASET_PATH_KEYS = ("path", "validation_path", "test_path")


def render_kuberay_job(spec: ClusterSpec, options: RenderOptions) -> list[dict[str, Any]]:
    """The ``ConfigMap`` and the ``RayJob`` (dicts ready for YAML), in that order."""
    if not options.search_file:
        raise DeployError(
            "ktc cluster render --format kuberay-job: expected --search SEARCH.yaml (the "
            "search the job runs), got none. Pass --search."
        )
    search, doc = load_search_document(options.search_file, check_paths=False)
    _check_dataset_paths(doc)
    storage = _require_storage(spec)
    _check_chief_reachable(spec)
    now = options.now or datetime.now(timezone.utc)
    stamp = f"{now:%Y%m%d-%H%M%S}"
    job_name = options.job_name or _default_job_name(search.name, stamp)
    _check_job_name(job_name)
    dir_name = search_dir_name(search.name, now)
    files = {
        SEARCH_FILE: Path(options.search_file).read_text(encoding="utf-8-sig"),
        CLUSTER_FILE: _cluster_text(spec, job_name),
    }
    size = sum(len(k.encode()) + len(v.encode()) for k, v in files.items())
    if size > MAX_CONFIGMAP_BYTES:
        raise DeployError(
            f"ktc cluster render --format kuberay-job: the search and cluster files are "
            f"{size:,} bytes together; expected at most {MAX_CONFIGMAP_BYTES:,} (a "
            "Kubernetes ConfigMap's limit). Shorten the files (comments, long lists)."
        )
    labels = {**MANAGED_BY, "ktcluster.io/search": k8s_name(search.name, 63)}
    meta: dict[str, Any] = {"name": job_name, "labels": labels}
    if options.namespace:
        meta["namespace"] = options.namespace
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": copy.deepcopy(meta),
        "data": files,
    }
    job_spec: dict[str, Any] = {
        "entrypoint": search_entrypoint(storage, dir_name, files_dir=JOB_FILES_DIR),
        # Ray job metadata: what `ktc` verbs find the search by through the Jobs API.
        "metadata": {
            "ktcluster-search": search.name,
            "ktcluster-search-dir": f"{storage.rstrip('/')}/{dir_name}",
        },
        "submissionMode": "K8sJobMode",
        # A retry would find its search directory taken: resume instead.
        "backoffLimit": 0,
        # The search directory lives on the head (or what it mounts): keep the
        # cluster for the verbs that read it; deleting the RayJob deletes it.
        "shutdownAfterJobFinishes": False,
        "rayClusterSpec": _with_job_files(raycluster_spec(spec, options), job_name),
    }
    job = {"apiVersion": API_VERSION, "kind": JOB_KIND, "metadata": meta, "spec": job_spec}
    return [config_map, job]


def _default_job_name(search_name: str, stamp: str) -> str:
    """``<search name>-<stamp>`` as a RayJob name; a long search name is shortened,
    never the stamp (it is what tells two renders apart)."""
    room = MAX_RAYJOB_NAME - len(stamp) - 1
    head = k8s_resource_name(search_name, room)
    return f"{head}-{stamp}"


def _require_storage(spec: ClusterSpec) -> str:
    if spec.storage is None:
        raise DeployError(
            "ktc cluster render --format kuberay-job: the cluster file has no storage; "
            "expected storage: PATH, the folder in the head pod that holds search "
            "directories (put it on a persistent volume mounted in the head pod: the pod's "
            "own disk goes when the pod does). Set storage in the cluster file."
        )
    if spec.storage.startswith("~") and not (spec.storage == "~" or spec.storage[1] == "/"):
        raise DeployError(
            f"ktc cluster render --format kuberay-job: storage {spec.storage!r} names another "
            "user's home; expected an absolute path or ~/... (the head pod's user). Write "
            "the absolute path."
        )
    return spec.storage


def _cluster_text(spec: ClusterSpec, job_name: str) -> str:
    """The cluster file the chief reads in the head pod: the spec as validated, with
    what only made sense on the user's machine replaced."""
    data = spec_data(spec)
    ray = dict(data.get("ray", {}))
    ray["address"] = "auto"  # the Ray cluster the job runs in
    ray.pop("dashboard", None)  # how the user's machine reaches the cluster, not the pod
    working_dir = spec.ray.working_dir
    if working_dir is None or "://" not in working_dir:
        # A local folder of the user's machine is not in the pod: user code comes
        # from the image (or a remote working_dir URI, kept as it is).
        ray["working_dir"] = None
    data["ray"] = ray
    if "chief" in data:
        # The address workers dial is the head pod's IP, which the chief finds
        # itself (bound to 0.0.0.0); the user's machine's idea of it is not the pod's.
        data["chief"] = {k: v for k, v in data["chief"].items() if k != "advertise"}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    parse_cluster(text, f"{CLUSTER_FILE} of RayJob {job_name}")  # it must load in the pod
    return (
        f"# The cluster file of RayJob {job_name}, rendered by ktcluster from cluster "
        f"{spec.name!r}.\n# In the head pod: ray.address is auto (the chief runs as a Ray "
        "job in the cluster), no ray.dashboard nor chief.advertise (the chief advertises "
        "its pod's IP),\n# ray.working_dir is not a local folder (user code comes from the "
        "image), and paths (chief.tls, storage) are paths in the head pod.\n" + text
    )


def _with_job_files(cluster_spec: dict[str, Any], config_map: str) -> dict[str, Any]:
    """``cluster_spec`` with the job's ConfigMap mounted read-only in the head pod."""
    out = copy.deepcopy(cluster_spec)
    pod = out["headGroupSpec"]["template"]["spec"]
    pod.setdefault("volumes", []).append(
        {"name": JOB_FILES_VOLUME, "configMap": {"name": config_map}}
    )
    pod["containers"][0].setdefault("volumeMounts", []).append(
        {"name": JOB_FILES_VOLUME, "mountPath": JOB_FILES_DIR, "readOnly": True}
    )
    return out


def _check_dataset_paths(doc: YamlDocument) -> None:
    dataset = doc.data.get("dataset")
    if not isinstance(dataset, dict):
        return
    for key in _DATASET_PATH_KEYS:
        value = dataset.get(key)
        if isinstance(value, str) and not (value.startswith("/") or value.startswith("~")):
            raise doc.error(
                ("dataset", key),
                f"{value!r} is relative, and the chief of a RayJob runs in the head pod, "
                "where nothing says what it is relative to; expected an absolute path "
                "that the pods see (a volume mounted in every pod). Write the absolute path.",
            )


def _check_chief_reachable(spec: ClusterSpec) -> None:
    # Every node is its own pod, whatever nodes[].host says: a chief bound to
    # loopback is out of reach of every worker but the head's.
    if len(spec.nodes) > 1 and is_loopback(spec.chief.host):
        raise DeployError(
            f"ktc cluster render --format kuberay-job: chief.host is {spec.chief.host!r}, but "
            f"the cluster has {len(spec.nodes)} nodes, each a pod of its own, whose workers "
            "could not dial it; expected chief.host: 0.0.0.0 (the chief then advertises its "
            "pod's IP). Set chief.host: 0.0.0.0 with chief.tls (files in the head pod), or "
            "chief.insecure: true on a pod network you trust."
        )


def _check_job_name(name: str) -> None:
    if len(name) > MAX_RAYJOB_NAME or name != k8s_resource_name(name, MAX_RAYJOB_NAME):
        raise DeployError(
            f"--job-name {name!r}: expected a DNS-1035 label of at most {MAX_RAYJOB_NAME} "
            "characters (lowercase letters, digits and '-', starting with a letter; KubeRay "
            f"adds a suffix for the RayCluster), got {len(name)} characters. Use a name "
            f"such as {k8s_resource_name(name, MAX_RAYJOB_NAME)!r}."
        )


__all__ = ["JOB_FILES_DIR", "render_kuberay_job"]
