"""``ktc evaluate DIR [--top K] [--retrain] [--seed N] [--cluster CLUSTER.yaml]``.

Scores the top K trials' models (their best epoch's weights) on the
dataset's held-out test split, on a worker of the cluster (its GPU, its
environment), never in this process. ``--retrain`` first trains the best
hyperparameters from scratch on train and validation merged, for the epochs
up to the best trial's peak (best_step + 1), seeded with ``--seed``, and
scores that model too; ``ktc export DIR --retrained --out FILE.keras`` saves
it. Results go to ``DIR/evaluation.json``. A running search is refused.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from orchestrator.cli.render import format_hyperparameters, format_score, make_console
from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument
from orchestrator.config.user_code import user_code_path
from orchestrator.evaluation import DEFAULT_SEED
from orchestrator.evaluation_results import EvaluationResults


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score the best trials on the test split (and retrain the best), on a worker",
        description=(
            "Score the K best trials' models (their best epoch's weights) on the dataset's "
            "held-out test split, on a worker of the cluster (its GPU and environment), never "
            "in this process. --retrain first trains the best hyperparameters from scratch on "
            "train and validation merged for best_step + 1 epochs, seeded, and scores that model "
            "too (`ktc export DIR --retrained --out FILE.keras` saves it). Results go to "
            "DIR/evaluation.json. A running search is refused."
        ),
    )
    add_search_argument(parser)
    parser.add_argument(
        "--top", type=int, default=1, metavar="K", help="evaluate the K best trials (default 1)"
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="retrain the best hyperparameters on train+validation for best_step+1 epochs, "
        "then evaluate that model too",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        metavar="N",
        help=f"the retrain's random seed (keras.utils.set_random_seed; default {DEFAULT_SEED})",
    )
    add_cluster_argument(
        parser,
        also="the evaluation runs there (default: the cluster the search ran on, as its "
        "ledger recorded)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan (every refusal before Ray starts), run on a worker, print the table."""
    from orchestrator.cli.session_cli import hide_gpus_from_chief
    from orchestrator.evaluation import plan_evaluation, record, resolve_cluster, run_on_cluster

    hide_gpus_from_chief()  # this process never trains; the worker owns the GPU
    plan = plan_evaluation(args.search_dir, top=args.top, retrain=args.retrain, seed=args.seed)
    cluster = resolve_cluster(plan.search, args.cluster)
    what = f"{len(plan.trials)} trial(s)"
    if plan.retrain_epochs is not None:
        what += f" and a retrain ({plan.retrain_epochs} epochs, seed {plan.seed})"
    print(f"evaluating {what} of {plan.search_dir} on cluster {cluster.name!r}", flush=True)
    # User code (module:attr) imports from the current directory, as for submit.
    with user_code_path([os.getcwd()]):
        outcome, where = run_on_cluster(plan, cluster)
    results = record(plan, outcome, where)
    console = make_console()
    console.print(results_table(results))
    if results.retrain is not None:
        # soft_wrap, no markup: the command is copied as printed.
        console.print(
            retrain_text(results, args.search_dir), soft_wrap=True, markup=False, highlight=False
        )
    console.print(f"results: {plan.search_dir / 'evaluation.json'}")
    return 0


def results_table(results: EvaluationResults) -> Table:
    """One row per evaluated trial (and the retrain): test loss and every metric."""
    names: list[str] = []
    rows = [t.metrics for t in results.trials]
    if results.retrain is not None:
        rows.append(results.retrain.metrics)
    for metrics in rows:
        names.extend(name for name in metrics if name not in names)
    table = Table(title=f"test split ({results.test_split or '?'})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    table.add_column(results.objective, justify="right", no_wrap=True)
    for name in names:
        table.add_column(f"test {name}", justify="right", no_wrap=True)
    table.add_column("samples", justify="right")
    table.add_column("hyperparameters")
    for t in results.trials:
        table.add_row(
            str(t.rank),
            t.trial_id,
            format_score(t.score),
            *(_metric(t.metrics.get(n)) for n in names),
            str(t.test_examples),
            format_hyperparameters(t.hyperparameters),
        )
    r = results.retrain
    if r is not None:
        table.add_row(
            "",
            f"retrained ({r.trial_id})",
            "-",
            *(_metric(r.metrics.get(n)) for n in names),
            str(r.test_examples),
            f"{r.epochs} epochs on {r.train_examples}+{r.val_examples} samples, seed {r.seed}",
        )
    return table


def retrain_text(results: EvaluationResults, search_dir: Path) -> str:
    """Where the retrained model is, and the command that exports it."""
    r = results.retrain
    if r is None:
        return ""
    return (
        f"retrained model: {r.model_path} (trial {r.trial_id}'s hyperparameters); export it "
        f"with `ktc export {search_dir} --retrained --out model.keras`"
    )


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
