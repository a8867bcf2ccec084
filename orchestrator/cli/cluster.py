"""``ktc cluster``: render Ray artifacts from a cluster YAML, bring the cluster
up or down (``ray up``/``ray down``, or a local simulation), make TLS certs."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from deploy.certs import generate_certs, tls_yaml_snippet
from deploy.launcher import LauncherAction, format_argv, launcher_argv, run_launcher
from deploy.local import (
    default_state_dir,
    read_state,
    start_local_cluster,
    stop_local_cluster,
)
from deploy.render import RenderFormat, RenderOptions, render
from deploy.render_options import head_port
from orchestrator.errors import ConfigError, DeployError

RAY_TOKEN_FILE = Path("~/.ray/auth_token")


def _load(path: str) -> Any:
    from orchestrator.config import load_cluster

    return load_cluster(path)


def _options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(
        ssh_user=args.ssh_user,
        ssh_key=args.ssh_key,
        install=args.install,
        head_port=args.head_port,
        ray_auth=False if args.no_ray_auth else None,
        image=getattr(args, "image", None),
        namespace=getattr(args, "namespace", None),
        search_file=getattr(args, "search", None),
        job_name=getattr(args, "job_name", None),
    )


def _write_out(text: str, out: str | None) -> None:
    if out is None or out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise DeployError(f"--out {out}: cannot write the rendered file: {exc}") from exc
    print(f"wrote {out}", file=sys.stderr)


def run_render(args: argparse.Namespace) -> int:
    """``ktc cluster render CLUSTER.yaml --format ray-up|kuberay|kuberay-job|commands``."""
    fmt = RenderFormat(args.format)
    if (fmt is RenderFormat.KUBERAY_JOB) != (args.search is not None) or (
        args.job_name is not None and fmt is not RenderFormat.KUBERAY_JOB
    ):
        raise ConfigError(
            f"ktc cluster render --format {fmt.value}: --search SEARCH.yaml (and --job-name) "
            "go with --format kuberay-job only, which needs --search; expected both or "
            "neither. Pass --search with --format kuberay-job, or drop it."
        )
    spec = _load(args.cluster)
    _write_out(render(spec, fmt, _options(args)), args.out)
    return 0


def _local_dir(args: argparse.Namespace, cluster_name: str | None) -> Path:
    if args.state_dir:
        return Path(args.state_dir).expanduser()
    if cluster_name is None:
        raise ConfigError(
            "ktc cluster down --local: pass the cluster YAML or --state-dir so I know "
            "which local cluster to stop."
        )
    return default_state_dir(cluster_name)


def _run_launcher(args: argparse.Namespace, action: LauncherAction) -> int:
    spec = _load(args.cluster)
    options = _options(args)
    text = render(spec, RenderFormat.RAY_UP, options)  # ConfigError on a --head-port conflict
    if args.dry_run:
        target = Path(args.out or f"<temp>/{spec.name}-ray-up.yaml")
        print(f"# would run: {format_argv(launcher_argv(action, target))}")
        sys.stdout.write(text)
        return 0
    ray_auth = spec.ray.auth if options.ray_auth is None else options.ray_auth
    if action is LauncherAction.UP and ray_auth and not RAY_TOKEN_FILE.expanduser().exists():
        raise DeployError(
            f"ktc cluster up: Ray token auth is on but {RAY_TOKEN_FILE} does not exist; "
            "run `ray get-auth-token --generate` first (it is copied to every node), "
            "or pass --no-ray-auth / set ray.auth: false on a trusted network."
        )
    if not args.yes and sys.stdin.isatty():
        answer = input(f"Run `ray {action.value}` for cluster {spec.name!r}? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("aborted", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="ktc-cluster-") as tmp:
        path = Path(args.out) if args.out else Path(tmp) / f"{spec.name}-ray-up.yaml"
        path.write_text(text)
        result = run_launcher(action, path)
    print(f"`{format_argv(result.argv)}` finished.")
    if action is LauncherAction.UP:
        print(
            f"Point the cluster YAML at it: ray.address: {spec.nodes[0].host}:"
            f"{head_port(spec, options)}, then `ktc submit SEARCH.yaml --cluster {args.cluster}`."
        )
    return 0


def run_up(args: argparse.Namespace) -> int:
    """``ktc cluster up CLUSTER.yaml [--local]``."""
    if not args.local:
        if args.cluster is None:
            raise ConfigError("ktc cluster up: expected a cluster YAML argument.")
        return _run_launcher(args, LauncherAction.UP)
    if args.cluster is None:
        raise ConfigError("ktc cluster up --local: expected a cluster YAML argument.")
    spec = _load(args.cluster)
    state_dir = _local_dir(args, spec.name)
    where = "" if args.head_port is None else f" (head on port {args.head_port})"
    if args.dry_run:
        print(f"# would start {len(spec.nodes)} simulated Ray nodes{where}, state in {state_dir}")
        return 0
    info = start_local_cluster(
        spec,
        state_dir,
        ray_auth=not args.no_ray_auth,
        timeout_s=args.timeout,
        head_port=args.head_port,
    )
    nodes = ", ".join(
        f"{n.name} ({len(n.gpus)} GPU, {n.cpus} CPU, ktc_node_{n.name})" for n in spec.nodes
    )
    print(f"local cluster {spec.name!r} is up at {info.address}: {nodes}")
    print(f"supervisor pid {info.supervisor_pid}; state in {info.state_file}")
    print(f"export RAY_ADDRESS={info.address}")
    if args.no_ray_auth:
        print("export RAY_AUTH_MODE=disabled")
    print(f"or set `ray.address: {info.address}` in {args.cluster}.")
    print(f"stop it with: ktc cluster down --local --state-dir {state_dir}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    """``ktc cluster down CLUSTER.yaml | --local``."""
    if not args.local:
        if args.cluster is None:
            raise ConfigError("ktc cluster down: expected a cluster YAML argument.")
        return _run_launcher(args, LauncherAction.DOWN)
    name = _load(args.cluster).name if args.cluster and not args.state_dir else None
    state_dir = _local_dir(args, name)
    info = read_state(state_dir)
    if info is None:
        # Already down (a second `down`, or a cluster that stopped itself): the
        # goal holds, so this is a successful no-op, not an error.
        print(f"no local cluster is running from {state_dir}; nothing to stop.")
        return 0
    if args.dry_run:
        print(f"# would stop the local cluster recorded in {state_dir}: {info}")
        return 0
    stop_local_cluster(state_dir)
    print(f"local cluster in {state_dir} stopped; {len(info.pids)} recorded processes are gone.")
    return 0


def run_certs(args: argparse.Namespace) -> int:
    """``ktc cluster certs DIR [--host HOST ...] [--days N]``."""
    paths = generate_certs(Path(args.dir), args.host or [], days=args.days)
    hosts = ", ".join([*(args.host or []), "localhost", "127.0.0.1"])
    print(f"wrote {paths.ca}, {paths.ca_key}, {paths.cert}, {paths.key} (valid for {hosts})")
    print(f"keep {paths.ca_key} secret; copy {paths.ca} to every worker machine.")
    print("Paste into the cluster YAML:\n")
    print(tls_yaml_snippet(paths), end="")
    return 0


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-user", default="ubuntu", help="SSH user for ray up (ubuntu)")
    parser.add_argument(
        "--ssh-key", default="~/.ssh/id_rsa", help="SSH private key for ray up (~/.ssh/id_rsa)"
    )
    parser.add_argument(
        "--install",
        default="pip install ktcluster",
        help="setup command that installs ktcluster on each node",
    )
    parser.add_argument(
        "--head-port",
        type=int,
        default=None,
        help="the head's Ray (GCS) port (default: the port of ray.address, else 6379; "
        "with up --local: a free port)",
    )
    parser.add_argument(
        "--no-ray-auth",
        action="store_true",
        help="turn Ray's token auth off (trusted networks and tests only)",
    )
    parser.add_argument("--out", help="write the rendered file here")


def register(subparsers: Any) -> None:
    """Add ``ktc cluster {render,up,down,certs}``."""
    cluster = subparsers.add_parser("cluster", help="bring a Ray cluster up from a cluster YAML")
    sub = cluster.add_subparsers(dest="cluster_verb", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("render", help="render ray-up / kuberay / kuberay-job / commands")
    p.add_argument("cluster", help="cluster YAML")
    p.add_argument(
        "--format", required=True, choices=[f.value for f in RenderFormat], help="what to render"
    )
    p.add_argument("--image", help="KubeRay container image (rayproject/ray:<version>-gpu)")
    p.add_argument("--namespace", help="KubeRay metadata.namespace")
    p.add_argument(
        "--search",
        metavar="SEARCH.yaml",
        help="kuberay-job: the search the RayJob runs (shipped in a ConfigMap)",
    )
    p.add_argument(
        "--job-name",
        help="kuberay-job: the RayJob's and ConfigMap's name (default: <search name>-<UTC time>)",
    )
    _add_render_options(p)
    p.set_defaults(func=run_render)

    for verb, func, what in (("up", run_up, "start"), ("down", run_down, "stop")):
        p = sub.add_parser(verb, help=f"{what} the cluster (ray {verb}, or --local)")
        p.add_argument("cluster", nargs="?", help="cluster YAML")
        p.add_argument("--dry-run", action="store_true", help="print instead of running")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--local", action="store_true", help="simulate the nodes on this machine")
        p.add_argument(
            "--state-dir", help="local simulation state (~/.ktcluster/local-cluster/NAME)"
        )
        p.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait for --local start-up"
        )
        _add_render_options(p)
        p.set_defaults(func=func)

    p = sub.add_parser("certs", help="generate a CA and a TLS server cert for the chief")
    p.add_argument("dir", help="output directory")
    p.add_argument(
        "--host", action="append", help="DNS name or IP the chief is reached by (repeatable)"
    )
    p.add_argument("--days", type=int, default=365, help="validity in days (365)")
    p.set_defaults(func=run_certs)
