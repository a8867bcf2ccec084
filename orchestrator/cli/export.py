"""``ktc export DIR --out best.keras [--rank N | --retrained] [--verify]``: save a model.

Rebuilds the trial at rank N (1 = best) from the search directory alone (no
live chief needed) and writes a ``.keras`` file that loads with
``keras.models.load_model``, with the best epoch's weights. ``--verify``
evaluates it on the search's validation set and prints the result next to the
recorded score (exit 1 when they differ).

``--retrained`` writes the model ``ktc evaluate --retrain`` trained on train
and validation merged instead; its ``--verify`` evaluates it on the test
split and compares with the test value ``ktc evaluate`` recorded.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from orchestrator.cli.render import format_hyperparameters, format_score
from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument
from orchestrator.config.user_code import user_code_path
from orchestrator.errors import ConfigError
from orchestrator.export import (
    VerifyResult,
    check_out_path,
    export_model,
    export_retrained,
    verify_export,
    verify_retrained,
)

# Float rounding between fit's validation pass and evaluate() stays far below this.
VERIFY_TOLERANCE = 1e-4


def register(subparsers: Any) -> None:
    """Add the ``export`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="save a trial's model as a .keras file",
        description=(
            "Rebuild a trial's model (the best, or --rank N) with its best epoch's weights "
            "and save it as a .keras file that keras.models.load_model reads."
        ),
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE.keras", help="where to write the model"
    )
    parser.add_argument(
        "--rank", type=int, default=1, metavar="N", help="1 = the best trial (default), 2 = next"
    )
    parser.add_argument(
        "--retrained",
        action="store_true",
        help="the model `ktc evaluate --retrain` trained on train+validation, instead of a trial's",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="evaluate the exported model on the validation set and compare with the score",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, optionally verify, and say what was written.

    The user's own hypermodel or dataset code (``module:attribute``) imports
    from the current directory, as for ``ktc submit``: run from the folder the
    search was submitted from.
    """
    check_out_path(args.out)  # before importing TensorFlow
    if args.retrained and args.rank != 1:
        raise ConfigError(
            f"--rank {args.rank} with --retrained: the retrained model is the best trial's "
            "hyperparameters retrained; drop --rank, or drop --retrained to export that trial"
        )
    with user_code_path([os.getcwd()]):
        if args.retrained:
            return _export_retrained(args)
        return _export(args)


def _export_retrained(args: argparse.Namespace) -> int:
    result = export_retrained(args.search_dir, args.out)
    metrics = ", ".join(f"test {k} {v:.4f}" for k, v in result.test_metrics.items())
    print(
        f"exported the retrained model (trial {result.trial_id}'s hyperparameters, "
        f"{result.epochs} epochs, seed {result.seed}; {metrics}) to {result.out_path}"
    )
    if not args.verify:
        return 0
    check = verify_retrained(args.search_dir, result)
    return _print_check(check)


def _export(args: argparse.Namespace) -> int:
    result = export_model(args.search_dir, args.out, rank=args.rank)
    print(
        f"exported trial {result.trial_id} (rank {args.rank}, score "
        f"{format_score(result.score)}) to {result.out_path}"
    )
    print(f"hyperparameters: {format_hyperparameters(result.hyperparameters, max_chars=400)}")
    if not args.verify:
        return 0
    check = verify_export(args.search_dir, result)
    return _print_check(check, where="the validation set")


def _print_check(check: VerifyResult, where: str = "the test split") -> int:
    recorded = "-" if check.recorded is None else f"{check.recorded:.6f}"
    print(f"verify: {check.metric} on {where} = {check.evaluated:.6f}; recorded {recorded}")
    difference = check.difference
    if difference is not None and difference > VERIFY_TOLERANCE:
        print(
            f"verify: MISMATCH by {difference:.6f}; the checkpoint may not be the best epoch's "
            "(or the dataset changed since the search ran)"
        )
        return 1
    return 0
