"""The ``ray start`` invocation for one node of a cluster YAML.

Every renderer (plain commands, the cluster-launcher YAML, KubeRay's
``rayStartParams``) starts each node the same way:

- ``CUDA_VISIBLE_DEVICES`` set to the node's GPU list, so Ray only hands out the
  GPUs the YAML names (``""`` on a CPU-only node hides every GPU);
- ``--num-gpus`` / ``--num-cpus`` from the YAML, never auto-detected;
- ``--resources='{"ktc_node_<name>": 1000}'``: the node-label resource the fleet
  places workers by (each worker asks for a 0.001 share of it).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from orchestrator.config.cluster import ClusterSpec, NodeSpec
from orchestrator.config.layout import node_resource_name
from orchestrator.errors import DeployError

#: Units of ``ktc_node_<name>`` each node advertises; a worker takes 0.001 of one.
NODE_RESOURCE_UNITS = 1000
DEFAULT_HEAD_PORT = 6379


@dataclass(frozen=True)
class NodeStart:
    """What ``ray start`` needs to know about one node of the cluster YAML."""

    name: str
    host: str
    gpus: tuple[int, ...]
    cpus: int
    is_head: bool

    @property
    def cuda_visible_devices(self) -> str:
        """``"0,1,3"`` for the node's GPUs, ``""`` for a CPU-only node."""
        return ",".join(str(g) for g in self.gpus)

    @property
    def resource_name(self) -> str:
        """The node-label resource, ``ktc_node_<name>``."""
        return node_resource_name(self.name)

    @property
    def resources_json(self) -> str:
        """The ``--resources`` value: ``{"ktc_node_<name>":1000}``."""
        return json.dumps({self.resource_name: NODE_RESOURCE_UNITS}, separators=(",", ":"))


def node_starts(spec: ClusterSpec) -> tuple[NodeStart, ...]:
    """One :class:`NodeStart` per node, in file order; the first node is the head."""
    return tuple(
        NodeStart(name=n.name, host=n.host, gpus=tuple(n.gpus), cpus=n.cpus, is_head=i == 0)
        for i, n in enumerate(spec.nodes)
    )


def head_of(spec: ClusterSpec) -> NodeSpec:
    """The head node: the first node of the cluster YAML."""
    return spec.nodes[0]


def require_distinct_hosts(spec: ClusterSpec, where: str) -> None:
    """Raise :class:`DeployError` if two nodes share a host (one Ray node per machine)."""
    seen: dict[str, str] = {}
    for node in spec.nodes:
        if node.host in seen:
            raise DeployError(
                f"{where}: nodes {seen[node.host]!r} and {node.name!r} both have host "
                f"{node.host!r}; a real cluster runs one Ray node per machine. Give each "
                "node its own host, merge them into one node, or use `ktc cluster up "
                "--local` to simulate several nodes on one machine."
            )
        seen[node.host] = node.name


def ray_start_args(node: NodeStart, *, head_address: str | None, port: int) -> list[str]:
    """The ``ray start`` argv (without the environment) for ``node``.

    The head gets ``--head --port``; other nodes ``--address=<head_address>``.
    """
    argv = ["ray", "start"]
    if node.is_head:
        argv += ["--head", f"--port={port}"]
    else:
        if head_address is None:
            raise DeployError(f"node {node.name!r}: a worker node needs the head's address")
        argv.append(f"--address={head_address}")
    argv += [
        f"--num-gpus={len(node.gpus)}",
        f"--num-cpus={node.cpus}",
        f"--resources={node.resources_json}",
    ]
    return argv


def ray_start_line(
    node: NodeStart,
    *,
    head_address: str | None,
    port: int = DEFAULT_HEAD_PORT,
    ray_auth: bool = True,
    extra_args: tuple[str, ...] = (),
) -> str:
    """The shell line that starts ``node``, e.g.
    ``CUDA_VISIBLE_DEVICES=0,1 ray start --head --port=6379 --num-gpus=2 ...``.

    With ``ray_auth`` the line sets ``RAY_AUTH_MODE=token``, so Ray refuses to
    start without the cluster token (``~/.ray/auth_token``) instead of silently
    starting an open cluster. ``head_address`` may be a shell expression such as
    ``$RAY_HEAD_IP:6379``; it is left unquoted so the shell expands it.
    ``extra_args`` are appended verbatim (already shell words, e.g. a ``~`` path
    that must stay unquoted to be expanded).
    """
    env = []
    if ray_auth:
        env.append("RAY_AUTH_MODE=token")
    env.append(f"CUDA_VISIBLE_DEVICES={node.cuda_visible_devices}")
    parts = [*env]
    for arg in ray_start_args(node, head_address=head_address, port=port):
        key, eq, value = arg.partition("=")
        if arg.startswith("--address=") and "$" in arg:
            parts.append(arg)  # let the shell expand $RAY_HEAD_IP
        elif eq and key.startswith("--"):
            parts.append(f"{key}={shlex.quote(value)}")  # --resources='{"ktc_node_a":1000}'
        else:
            parts.append(shlex.quote(arg))
    return " ".join([*parts, *extra_args])
