"""``ktc cluster render --format ray-up``: a Ray cluster-launcher YAML for
on-prem machines reached over SSH (``provider.type: local``).

Why one dispatching worker command instead of a node type per machine: Ray's
local provider refuses ``available_node_types``/``head_node``/``worker_nodes``
(``ray/autoscaler/_private/local/config.py:prepare_local`` aborts with "The field
available_node_types is not supported for on-premise clusters") and folds every
worker IP into one internal node type, so all workers run the same
``worker_start_ray_commands``. The head has its own ``head_start_ray_commands``.
So each worker runs one generated shell ``case`` that finds which YAML node it
is and starts Ray with that node's GPUs, CPUs and label resource. It matches, in
order: ``$RAY_CLOUD_INSTANCE_ID`` (Ray's autoscaler v2 exports the provider node
id, i.e. the exact ``worker_ips`` entry, to start commands), ``hostname``,
``hostname -f`` and every address of ``hostname -I``. A machine that matches no
node fails loudly instead of joining with the wrong GPUs.

Ray token auth stays on: the launching machine's ``~/.ray/auth_token`` is a
``file_mounts`` entry (Ray copies it to the head, and the head's autoscaler
copies ``file_mounts`` on to every worker), and every ``ray start`` runs with
``RAY_AUTH_MODE=token`` so a node without the token refuses to start.
"""

from __future__ import annotations

import shlex
from typing import Any

from deploy.ray_start import (
    NodeStart,
    node_starts,
    ray_start_line,
    require_distinct_hosts,
)
from deploy.render_options import RenderOptions, head_port
from orchestrator.config.cluster import ClusterSpec

RAY_TOKEN_PATH = "~/.ray/auth_token"
# Written by `ray up` on the head; the head's monitor needs it to drive the workers.
HEAD_EXTRA_ARGS = ("--autoscaling-config=~/ray_bootstrap_config.yaml",)


def worker_dispatch_command(
    cluster_name: str, workers: tuple[NodeStart, ...], *, port: int, ray_auth: bool
) -> str:
    """One shell command that starts Ray on whichever worker machine runs it.

    Each ``case`` branch is the plain ``ray start`` line of one node, joining
    ``$RAY_HEAD_IP`` (exported by Ray's launcher into worker start commands).
    """
    branches = []
    for node in workers:
        line = ray_start_line(
            node, head_address=f"$RAY_HEAD_IP:{port}", port=port, ray_auth=ray_auth
        )
        branches.append(f"{shlex.quote(node.host)}) {line}; exit $?;;")
    known = ", ".join(node.host for node in workers)
    return (
        'for ktc_self in "${RAY_CLOUD_INSTANCE_ID:-}" "$(hostname 2>/dev/null)" '
        '"$(hostname -f 2>/dev/null)" $(hostname -I 2>/dev/null); do '
        'case "$ktc_self" in ' + " ".join(branches) + " esac; done; "
        f'echo "ktcluster: this machine ($(hostname)) is none of the worker hosts of '
        f'cluster {cluster_name} ({known}); fix nodes[].host in the cluster YAML" >&2; '
        "exit 1"
    )


def render_ray_up(spec: ClusterSpec, options: RenderOptions) -> dict[str, Any]:
    """The cluster-launcher config (a dict ready for YAML) for ``spec``.

    Raises :class:`~orchestrator.errors.DeployError` if two nodes share a host.
    """
    require_distinct_hosts(spec, "ktc cluster render --format ray-up")
    ray_auth = spec.ray.auth if options.ray_auth is None else options.ray_auth
    starts = node_starts(spec)
    head, workers = starts[0], starts[1:]
    port = head_port(spec, options)
    config: dict[str, Any] = {
        "cluster_name": spec.name,
        "provider": {
            "type": "local",
            "head_ip": head.host,
            "worker_ips": [node.host for node in workers],
        },
        "auth": {"ssh_user": options.ssh_user, "ssh_private_key": options.ssh_key},
        "file_mounts": {RAY_TOKEN_PATH: RAY_TOKEN_PATH} if ray_auth else {},
        "setup_commands": [options.install],
        "head_start_ray_commands": [
            "ray stop",
            ray_start_line(
                head,
                head_address=None,
                port=port,
                ray_auth=ray_auth,
                extra_args=HEAD_EXTRA_ARGS,
            ),
        ],
        "worker_start_ray_commands": (
            ["ray stop", worker_dispatch_command(spec.name, workers, port=port, ray_auth=ray_auth)]
            if workers
            else []
        ),
    }
    return config
