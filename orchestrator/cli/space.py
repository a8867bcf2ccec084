"""``ktc space FILE|DIR [--json]``: print a search space, as Keras Tuner's
``search_space_summary`` does: each hyperparameter with its type, range or
values, step, sampling, default and conditions (parent and values).

- FILE, a search YAML: the space is what Keras Tuner itself would declare. A
  stock ``keras_tuner`` Tuner is made around the hypermodel (in a temporary
  folder, with a local oracle), which declares the space and builds the
  model until every conditional scope was active once: the very code a
  worker's Tuner runs. User code imports from the current directory, as for
  ``ktc submit``.
- DIR, a search directory: the space the chief recorded in its ledger
  (opened read-only), as the search really ran it.

The space and the grid size are computed in :mod:`orchestrator.search_space`;
the verb prints them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError
from orchestrator.search_space import (
    grid_note,
    rows,
    space_from_search,
    space_from_search_dir,
)

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec


def register(subparsers: Any) -> None:
    """Add the ``space`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "space",
        help="print a search space (from a search file or a search directory)",
        description=(
            "Print the search space: each hyperparameter with its type, range or values, step, "
            "sampling, default and conditions. FILE: a search YAML (the space Keras Tuner "
            "declares from its hypermodel); DIR: a search directory (the space its ledger holds)."
        ),
    )
    parser.add_argument("target", metavar="FILE|DIR", type=Path, help="a search YAML or directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def _load(target: Path) -> tuple[str, Any, SearchSpec | None]:
    if target.is_dir():
        return f"search directory {target}", space_from_search_dir(target), None
    from orchestrator.config.loader import load_search_document
    from orchestrator.config.preflight import check_hypermodel_space

    spec, doc = load_search_document(str(target), check_paths=False)
    check_hypermodel_space(spec, doc)
    try:
        return f"search file {target}", space_from_search(spec), spec
    except ConfigError as exc:
        raise ConfigError(f"{target}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Print the space as a table (or JSON)."""
    what, hp, spec = _load(args.target)
    table = rows(hp)
    if args.json:
        print(json.dumps([r.to_json() for r in table], indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Piped output gets a wide table rather than rich's 80 columns.
    width = None if sys.stdout.isatty() else 160
    console = Console(file=sys.stdout, soft_wrap=True, emoji=False, width=width)
    out = Table(title=f"search space of {what}: {len(table)} hyperparameters", title_justify="left")
    for column in ("name", "type", "range / values", "step", "sampling", "default", "conditions"):
        out.add_column(column)
    for row in table:
        conditions = "; ".join(f"{p} in {list(v)}" for p, v in row.conditions)
        cells = (
            row.name,
            row.type,
            row.values,
            "-" if row.step is None else str(row.step),
            row.sampling or "-",
            str(row.default),
            conditions or "-",
        )
        out.add_row(*(Text(cell) for cell in cells))  # Text: "[a, b]" is not markup
    console.print(out)
    if spec is not None and spec.oracle.type == "grid":
        print(grid_note(hp))
    return 0
