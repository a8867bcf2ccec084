"""The search a verb acts on: ``DIR | ID [--cluster CLUSTER.yaml]``, defined once.

Every verb that takes a search (``status``, ``results``, ``report``,
``export``, ``evaluate``, ``scale``, ``cancel``, ``resume``, ``logs``) takes a
search directory on this machine or the id ``ktc submit`` printed for a
search on a cluster. The id is looked up on ``--cluster``, else on the
cluster file ``ktc use`` remembered; one resolver decides which
(:func:`orchestrator.remote_verbs.remote_search_id`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

CLUSTER_HELP = (
    "the cluster file a search id is looked up on (default: the one `ktc use` remembered)"
)


def add_search_argument(parser: argparse.ArgumentParser, *, dest: str = "search_dir") -> None:
    """The positional ``DIR | ID``."""
    parser.add_argument(
        dest,
        metavar="DIR|ID",
        type=Path,
        help="the search directory, or the search id `ktc submit` printed (see --cluster)",
    )


def add_cluster_argument(parser: argparse.ArgumentParser, *, also: str = "") -> None:
    """``--cluster CLUSTER.yaml`` (``also``: what else the verb does with it)."""
    parser.add_argument(
        "--cluster",
        metavar="CLUSTER.yaml",
        help=CLUSTER_HELP + (f"; {also}" if also else ""),
    )
