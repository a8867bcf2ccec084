"""``ktc scale DIR (--workers N | --node NAME=N ... | --apply CLUSTER.yaml) [--now]``.

Resizes the fleet of a running search through its chief's Control RPC
``Scale`` (only a holder of the search's token may). Scaling down drains by
default: running trials finish, then those workers stop; ``--now`` preempts
them and their trials are requeued at once. Arguments, and an ``--apply``
file, are checked here before anything is sent.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument
from orchestrator.config.loader import load_cluster_text
from orchestrator.errors import ChiefUnavailableError, ConfigError
from orchestrator.protocol.client import TrialClient
from orchestrator.search_dir import require_search_dir

_NODE_ARG = re.compile(r"^(?P<name>[^=\s]+)=(?P<count>[^=]*)$")


def register(subparsers: Any) -> None:
    """Add the ``scale`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "scale",
        help="resize a running search's fleet of workers",
        description=(
            "Resize a running search's fleet: a total (--workers N), per node "
            "(--node NAME=N, repeatable), or to an edited cluster file (--apply). "
            "Scaling down drains running trials first unless --now."
        ),
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument("--workers", type=str, default=None, metavar="N", help="total workers")
    parser.add_argument(
        "--node",
        action="append",
        default=None,
        metavar="NAME=N",
        help="workers on node NAME (repeat for several nodes)",
    )
    parser.add_argument(
        "--apply", type=Path, default=None, metavar="CLUSTER.yaml", help="reconcile to this file"
    )
    parser.add_argument(
        "--now",
        action="store_true",
        help="preempt removed workers at once (their trials are requeued) instead of draining",
    )
    parser.set_defaults(func=run)


def parse_count(flag: str, text: str) -> int:
    """A worker count >= 0, or ConfigError naming the flag."""
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(
            f"{flag}: expected a whole number of workers >= 0, got {text!r}"
        ) from None
    if count < 0:
        raise ConfigError(f"{flag}: expected a number of workers >= 0, got {count}")
    return count


def parse_node_args(values: Sequence[str]) -> dict[str, int]:
    """``["gpu-a=2", "gpu-b=0"]`` -> ``{"gpu-a": 2, "gpu-b": 0}``; ConfigError on bad syntax."""
    nodes: dict[str, int] = {}
    for value in values:
        match = _NODE_ARG.match(value)
        if match is None:
            raise ConfigError(
                f"--node {value!r}: expected NAME=N (a node name from the cluster file and a "
                "worker count), e.g. --node gpu-a=2"
            )
        name = match.group("name")
        if name in nodes:
            raise ConfigError(
                f"--node {value!r}: node {name!r} is given twice; give each node once"
            )
        nodes[name] = parse_count(f"--node {name}", match.group("count"))
    return nodes


def connect(search_dir: Path, why: str) -> TrialClient:
    """A client for the live chief of ``search_dir``.

    With none, ChiefUnavailableError "no live chief for DIR; <why>", where
    ``why`` may use ``{dir}`` for the directory.
    """
    path = require_search_dir(search_dir)
    try:
        return TrialClient.from_search_dir(path, reconnect_timeout_s=5.0)
    except ChiefUnavailableError as exc:
        raise ChiefUnavailableError(f"no live chief for {path}; {why.format(dir=path)}") from exc


def run(args: argparse.Namespace) -> int:
    """Check the arguments, send Scale, print the chief's summary."""
    given = [
        flag
        for flag, value in (
            ("--workers", args.workers),
            ("--node", args.node),
            ("--apply", args.apply),
        )
        if value is not None
    ]
    if len(given) != 1:
        got = " and ".join(given) if given else "none"
        raise ConfigError(
            "ktc scale: give exactly one of --workers N, --node NAME=N (repeatable) or "
            f"--apply CLUSTER.yaml; got {got}"
        )
    kwargs: dict[str, Any] = {"now": bool(args.now)}
    if args.workers is not None:
        kwargs["total_workers"] = parse_count("--workers", args.workers)
    elif args.node is not None:
        kwargs["node_workers"] = parse_node_args(args.node)
    else:
        path = Path(args.apply)
        try:
            # ConfigError (exit 2) before anything is sent; the text checked is the text sent.
            _, kwargs["cluster_yaml"] = load_cluster_text(path)
        except ConfigError as exc:
            raise ConfigError(f"--apply {exc}") from None
        kwargs["cluster_yaml_path"] = str(path.resolve())
    with connect(
        args.search_dir,
        "scaling needs a running search (resume it with `ktc resume {dir}`)",
    ) as client:
        summary = client.scale(**kwargs)
        wanted = client.status().get("workers_wanted")
    print(summary)
    if wanted == 0:
        # Legitimate (a pause), but the search now sits RUNNING with nothing to run it.
        print(
            f"warning: 0 workers wanted: nothing progresses until "
            f"`ktc scale {args.search_dir} --workers N`",
            file=sys.stderr,
        )
    print(f"watch the fleet with `ktc status {args.search_dir} --watch`")
    return 0
