"""``ktc cluster render --format kuberay``: a KubeRay ``ray.io/v1`` ``RayCluster``.

One worker group per YAML node (``replicas: 1``), not one per node shape. The
fleet places a worker on a node by asking for a share of that node's own
resource ``ktc_node_<name>``; a group with ``replicas: N`` gives all N pods the
same ``rayStartParams``, hence the same resource, and the fleet could no longer
tell the nodes apart (nor put a YAML node's workers on one pod). Nodes that
share a shape therefore get identical groups that differ only in their label
resource; the shape is recorded in the ``ktcluster.io/shape`` label.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from deploy.ray_start import NodeStart, node_starts
from deploy.render_options import RenderOptions, default_ray_image
from orchestrator.config.cluster import ClusterSpec
from orchestrator.errors import DeployError

API_VERSION = "ray.io/v1"
KIND = "RayCluster"
GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = {"app.kubernetes.io/managed-by": "ktcluster"}


# KubeRay's own limits (ray-operator/controllers/ray/utils/constant.go): it
# appends a suffix to a RayCluster's name for its pods and services, and a RayJob's
# RayCluster gets ``<job name>-<5 characters>``.
MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6


def k8s_name(name: str, max_length: int = 50) -> str:
    """``name`` as a DNS-1123 label (lowercase alphanumerics and ``-``, at most
    ``max_length`` characters, no ``-`` at either end)."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return label[:max_length].rstrip("-") or "ktc"


def k8s_resource_name(name: str, max_length: int) -> str:
    """``name`` as KubeRay wants a RayCluster's or RayJob's name: a DNS-1035 label
    (a DNS-1123 label that starts with a letter) of at most ``max_length`` characters."""
    label = k8s_name(name, max_length)
    if not label[0].isalpha():
        label = k8s_name(f"ktc-{label}", max_length)
    return label


def shape_of(node: NodeStart) -> str:
    """The node's shape label, e.g. ``gpus4-cpus16``."""
    return f"gpus{len(node.gpus)}-cpus{node.cpus}"


def _check_gpus(spec: ClusterSpec) -> None:
    # The device plugin hands a pod N GPUs that it sees as 0..N-1, whatever their
    # physical index; the workers set CUDA_VISIBLE_DEVICES from the YAML's list.
    for i, node in enumerate(spec.nodes):
        expected = tuple(range(len(node.gpus)))
        if tuple(node.gpus) != expected:
            raise DeployError(
                f"ktc cluster render --format kuberay: nodes[{i}] ({node.name}).gpus: "
                f"expected {list(expected)} (a pod sees its {len(node.gpus)} GPUs as "
                f"0..{len(node.gpus) - 1}), got {list(node.gpus)}; list GPUs 0..N-1 "
                "for Kubernetes nodes and let the device plugin choose the physical ones."
            )


def ray_start_params(node: NodeStart) -> dict[str, str]:
    """``rayStartParams`` (all strings, as KubeRay requires) for ``node``."""
    return {
        "num-gpus": str(len(node.gpus)),
        "num-cpus": str(node.cpus),
        # KubeRay pastes the value into a shell command line: keep it quoted.
        "resources": f"'{node.resources_json}'",
    }


def _pod_template(container: str, node: NodeStart, image: str) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(node.cpus)}
    if node.gpus:
        limits[GPU_RESOURCE] = len(node.gpus)
    env: list[dict[str, str]] = [
        {"name": "CUDA_VISIBLE_DEVICES", "value": node.cuda_visible_devices}
    ]
    return {
        "metadata": {
            "labels": {
                "ktcluster.io/node": k8s_name(node.name),
                "ktcluster.io/shape": shape_of(node),
            }
        },
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": image,
                    "env": env,
                    "resources": {"limits": limits, "requests": {"cpu": str(node.cpus)}},
                }
            ]
        },
    }


def render_kuberay(spec: ClusterSpec, options: RenderOptions) -> dict[str, Any]:
    """The ``RayCluster`` manifest (a dict ready for YAML) for ``spec``."""
    metadata_: dict[str, Any] = {
        "name": k8s_resource_name(spec.name, MAX_RAYCLUSTER_NAME),
        "labels": dict(MANAGED_BY),
    }
    if options.namespace:
        metadata_["namespace"] = options.namespace
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata_,
        "spec": raycluster_spec(spec, options),
    }


def raycluster_spec(spec: ClusterSpec, options: RenderOptions) -> dict[str, Any]:
    """A ``RayCluster``'s ``spec`` for ``spec``: also a ``RayJob``'s ``rayClusterSpec``.

    The first node is the head group; every other node gets its own worker
    group. With Ray auth on, ``spec.authOptions.mode: token`` makes KubeRay
    (>= 1.5.1) create the token Secret and inject it into every pod.
    """
    _check_gpus(spec)
    ray_auth = spec.ray.auth if options.ray_auth is None else options.ray_auth
    image = options.image or default_ray_image()
    starts = node_starts(spec)
    head, workers = starts[0], starts[1:]
    groups: list[dict[str, Any]] = []
    used: set[str] = set()
    for node in workers:
        name = k8s_name(node.name)
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        groups.append(
            {
                "groupName": name,
                "replicas": 1,
                "minReplicas": 1,
                "maxReplicas": 1,
                "rayStartParams": ray_start_params(node),
                "template": _pod_template("ray-worker", node, image),
            }
        )
    cluster_spec: dict[str, Any] = {"rayVersion": metadata.version("ray")}
    if ray_auth:
        cluster_spec["authOptions"] = {"mode": "token"}
    cluster_spec["headGroupSpec"] = {
        "rayStartParams": ray_start_params(head),
        "template": _pod_template("ray-head", head, image),
    }
    cluster_spec["workerGroupSpecs"] = groups
    return cluster_spec
