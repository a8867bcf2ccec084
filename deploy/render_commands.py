"""``ktc cluster render --format commands``: one ``ray start`` line per node, for
users who start machines by hand."""

from __future__ import annotations

from deploy.ray_start import head_of, node_starts, ray_start_line
from deploy.render_options import RenderOptions, head_port
from orchestrator.config.cluster import ClusterSpec


def render_commands(spec: ClusterSpec, options: RenderOptions) -> str:
    """The shell lines to run on each node, head first, each after a
    ``# node <name> (<host>)`` comment."""
    ray_auth = spec.ray.auth if options.ray_auth is None else options.ray_auth
    head = head_of(spec)
    port = head_port(spec, options)
    head_address = f"{head.host}:{port}"
    lines = [f"# ktcluster: Ray cluster {spec.name!r}; run each block on its machine."]
    if ray_auth:
        lines += [
            "# Ray token auth is on: run `ray get-auth-token --generate` on the head first,",
            "# then copy ~/.ray/auth_token to the same path on every other node (mode 0600).",
        ]
    for node in node_starts(spec):
        lines.append(f"# node {node.name} ({node.host})")
        lines.append(
            ray_start_line(
                node,
                head_address=None if node.is_head else head_address,
                port=port,
                ray_auth=ray_auth,
            )
        )
    return "\n".join(lines) + "\n"
