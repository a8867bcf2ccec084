"""``ktc use [CLUSTER.yaml | --clear]``: remember which cluster file later commands use.

``ktc use CLUSTER.yaml`` validates the file and remembers its absolute path
(``orchestrator/config/user_settings.py`` says why the path and not a copy);
``ktc use`` prints the current one; ``ktc use --clear`` forgets it. Exit 2 for
a file that does not validate (nothing is remembered then).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from orchestrator.config.user_settings import (
    RememberedCluster,
    choice_file,
    forget_cluster,
    remember_cluster,
    remembered_cluster,
)
from orchestrator.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``use`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "use",
        help="remember the cluster file later commands use",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("cluster", nargs="?", metavar="CLUSTER.yaml", help="cluster file")
    parser.add_argument("--clear", action="store_true", help="forget the remembered cluster file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Remember, show or forget the cluster file."""
    env = dict(os.environ)
    if args.clear and args.cluster:
        raise ConfigError(
            f"ktc use: expected either CLUSTER.yaml or --clear, got both ({args.cluster} and "
            "--clear). Pass one of them."
        )
    if args.clear:
        forgotten = forget_cluster(env)
        if forgotten is None:
            print("no cluster file was remembered; nothing to forget.")
        else:
            print(
                f"forgot cluster {forgotten.name!r} ({forgotten.path}); commands now use "
                "--cluster, else the embedded local Ray."
            )
        return 0
    if args.cluster:
        chosen = remember_cluster(args.cluster, env)
        print(f"using cluster {chosen.spec.name!r} ({chosen.path}) from now on: {_where(chosen)}.")
        print(f"remembered in {choice_file(env)}; `ktc use --clear` forgets it.")
        for warning in chosen.spec.warnings():
            print(f"warning: {chosen.path}: {warning}", file=sys.stderr)
        return 0
    current = remembered_cluster(env)
    if current is None:
        print(
            "no cluster file is remembered: commands use --cluster, else the embedded local "
            "Ray. Choose one with `ktc use CLUSTER.yaml`."
        )
        return 0
    note = " (the file changed since `ktc use`; it is used as it is now)" if current.changed else ""
    print(f"cluster {current.spec.name!r}: {current.path}{note}")
    print(f"  {_where(current)}")
    return 0


def _where(chosen: RememberedCluster) -> str:
    ray = chosen.spec.ray
    dashboard = ray.dashboard_url or "none (ray.dashboard is not set)"
    return f"ray {ray.address}, dashboard {dashboard}"
