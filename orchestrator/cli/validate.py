"""``ktc validate FILE...``: check cluster and search files and show what they resolve to.

Every file is checked (one bad file does not hide the others). A cluster file
prints its worker map, and the paths the chief reads (TLS files, ``storage``),
which are paths on the machine that runs the chief: the head, for a cluster
the search reaches through ``ray.address``. A search file prints a short
summary. ``--json`` prints one JSON list instead.

Nothing is dialled unless asked: ``ray.dashboard`` is checked by its spelling;
``--check-dashboard`` also asks the dashboard (Ray's Jobs API) for its version,
with Ray's token when ``ray.auth`` is on, within ``--timeout`` seconds.

Exit 0 when every file is valid (and every dashboard asked answered), 2 when a
file is not, 1 when the files are valid but a dashboard did not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.config import ClusterSpec, SearchSpec
from orchestrator.config.loader import load_document
from orchestrator.config.preflight import check_search
from orchestrator.errors import ConfigError
from orchestrator.ray_dashboard import (
    DEFAULT_TIMEOUT_S,
    DashboardProbe,
    find_ray_token,
    probe_dashboard,
)

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class FileReport:
    """The outcome of validating one file."""

    file: str
    spec: ClusterSpec | SearchSpec | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    grid_points: int | None = None  # a grid search's size, when finite and counted
    dashboard: DashboardProbe | None = None  # --check-dashboard's answer

    @property
    def valid(self) -> bool:
        """True when the file loaded without errors."""
        return self.spec is not None and not self.errors

    @property
    def kind(self) -> str | None:
        """``cluster``, ``search``, or None when the kind could not be told."""
        return None if self.spec is None else self.spec.kind


def register(subparsers: Any) -> None:
    """Add the ``validate`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "validate",
        help="check cluster and search YAML files",
        description="Check cluster and search YAML files; print the worker map of cluster files.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="cluster or search YAML files")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tables")
    parser.add_argument(
        "--check-dashboard",
        action="store_true",
        help="also ask each cluster file's ray.dashboard (Ray's Jobs API) whether it answers "
        "and accepts this machine's Ray token (off by default: validate dials nothing)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long --check-dashboard waits for an answer ({DEFAULT_TIMEOUT_S:g})",
    )
    parser.set_defaults(func=run)


def check_file(path: str) -> FileReport:
    """Validate one file, with the checks ``ktc submit`` makes before it starts
    anything (user code imports from the cwd, the hypermodel's space, the
    search directory); a folder that already holds a search is only a warning."""
    warnings: tuple[str, ...] = ()
    grid_points: int | None = None
    try:
        spec, doc = load_document(path)
        if isinstance(spec, SearchSpec):
            taken = check_search(spec, doc, search_path=[os.getcwd()], taken_dir_is_error=False)
            warnings = (taken,) if taken else ()
            warnings += dataset_cache_warnings(spec)
            if spec.oracle.type == "grid":
                grid_points, grid_warnings = grid_check(spec)
                warnings += grid_warnings
    except ConfigError as exc:
        return FileReport(file=path, spec=None, errors=(str(exc),))
    if isinstance(spec, ClusterSpec):
        warnings = tuple(spec.warnings())
    return FileReport(file=path, spec=spec, warnings=warnings, grid_points=grid_points)


def head_paths_note(spec: ClusterSpec) -> str | None:
    """What to know about the paths the chief reads, when it may not run here."""
    if not spec.chief_paths or spec.is_local:
        return None
    listed = ", ".join(f"{key} {path}" for key, path in spec.chief_paths)
    tls = (
        "; the TLS files were checked on this machine only, so put them at the same paths "
        "on the head (docs/deploy.md)"
        if spec.chief.tls is not None
        else ""
    )
    return (
        f"paths on the head: {listed}. The chief reads them where it runs, which for "
        f"ray.address {spec.ray.address!r} is the head when the search runs there (as a Ray "
        f"job, or with ktc submit on the head){tls}."
    )


def check_dashboard(report: FileReport, env: dict[str, str], timeout_s: float) -> FileReport:
    """``report`` with the answer of its cluster's ``ray.dashboard`` (or an error
    when a valid cluster file has none)."""
    spec = report.spec
    if not isinstance(spec, ClusterSpec) or not report.valid:
        return report
    url = spec.ray.dashboard_url
    if url is None:
        return replace(
            report,
            errors=(
                f"{report.file}: ray.dashboard: --check-dashboard, but the file sets no "
                "ray.dashboard; expected HOST:PORT of the Ray dashboard (e.g. 10.0.0.1:8265). "
                "Add ray.dashboard to the cluster file.",
            ),
        )
    token = find_ray_token(env) if spec.ray.auth else None
    probe = probe_dashboard(url, token=token, timeout_s=timeout_s)
    warnings = report.warnings
    local = _local_ray_version()
    if probe.ok and local is not None and probe.ray_version != local:
        warnings += (
            f"ray.dashboard: the cluster runs Ray {probe.ray_version}, this machine Ray "
            f"{local}; Ray's client and Jobs API expect the same version on both sides. "
            f"Install ray=={probe.ray_version} here, or run that version on the cluster.",
        )
    return replace(report, dashboard=probe, warnings=warnings)


def _local_ray_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("ray")
    except metadata.PackageNotFoundError:
        return None


def dataset_cache_warnings(spec: SearchSpec) -> tuple[str, ...]:
    """A Keras built-in dataset missing from this machine's Keras cache."""
    from workers.datasets import KERAS_DATASET_FILES, keras_dataset_missing

    if spec.dataset is None or spec.dataset.source not in KERAS_DATASET_FILES:
        return ()
    missing = keras_dataset_missing(spec.dataset.source)
    if not missing:
        return ()
    return (
        f"dataset.source: {spec.dataset.source!r} is not in the local Keras cache (missing "
        f"{', '.join(str(p) for p in missing)}); each worker downloads it on first use, which "
        "needs internet on the workers. Offline, copy the file(s) there on every worker, or "
        "use dataset: digits or npz.",
    )


def grid_check(spec: SearchSpec) -> tuple[int | None, tuple[str, ...]]:
    """A grid search's size, and warnings: Floats without a step, or a space that
    cannot be read (builds the hypermodel: imports TensorFlow)."""
    from orchestrator.search_space import (
        KT_FLOAT_GRID_SAMPLES,
        floats_without_step,
        grid_size,
        space_from_search,
    )

    try:
        hp = space_from_search(spec)
    except ConfigError as exc:
        return None, (f"cannot size the grid: {exc}",)
    warnings: list[str] = []
    loose = floats_without_step(hp)
    if loose:
        warnings.append(
            f"oracle.type: grid over Float {', '.join(repr(n) for n in loose)} with no step: a "
            f"continuous range is not a finite grid; Keras Tuner's GridSearch tries only "
            f"{KT_FLOAT_GRID_SAMPLES} evenly spaced values of each (plus the default). Give each "
            "a step (hypermodel.overrides.<name>: {min, max, step}) or values: [...]."
        )
    size = grid_size(hp)
    cap = spec.oracle.max_trials
    if size is not None and cap is not None and cap < size:
        warnings.append(
            f"oracle.max_trials: {cap} stops the grid before its {size} points; remove "
            "max_trials to run the whole grid."
        )
    return (size if not loose else None), tuple(warnings)


def search_summary(spec: SearchSpec) -> dict[str, Any]:
    """The few facts of a search file worth showing."""
    dataset = spec.dataset.source if spec.dataset is not None else "(hypermodel default)"
    return {
        "name": spec.name,
        "hypermodel": spec.hypermodel.name,
        "overrides": sorted(spec.hypermodel.overrides),
        "dataset": dataset,
        "oracle": spec.oracle.type,
        "max_trials": spec.oracle.max_trials,
        "objective": spec.objective.name,
        "direction": spec.objective.resolved_direction,
        "epochs": spec.training.epochs,
        "scheduler": scheduler_summary(spec),
        "output_directory": (
            spec.output.directory
            if spec.output.directory is not None
            else f"searches/{spec.name}-<timestamp>"
        ),
    }


def scheduler_summary(spec: SearchSpec) -> str | None:
    """The trial scheduler in one line, with the settings it runs with (defaults filled in)."""
    scheduler = spec.scheduler
    if scheduler is None:
        return None
    if scheduler.type == "asha":
        return (
            f"asha (grace_epochs {scheduler.grace_epochs}, reduction_factor "
            f"{scheduler.reduction_factor}, max_epochs {spec.scheduler_max_epochs})"
        )
    return f"median (grace_epochs {scheduler.grace_epochs}, min_trials {scheduler.min_trials})"


def _to_json(report: FileReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "file": report.file,
        "kind": report.kind,
        "valid": report.valid,
        "errors": list(report.errors),
        "warnings": list(report.warnings),
    }
    if isinstance(report.spec, ClusterSpec):
        out["workers"] = [slot.to_dict() for slot in report.spec.worker_slots()]
        out["dashboard"] = report.spec.ray.dashboard_url
        out["storage"] = report.spec.storage
        out["head_paths"] = [{"key": k, "path": p} for k, p in report.spec.chief_paths]
        if report.dashboard is not None:
            out["dashboard_check"] = {
                "state": report.dashboard.state.value,
                "ok": report.dashboard.ok,
                "ray_version": report.dashboard.ray_version,
                "message": report.dashboard.message(),
            }
    elif isinstance(report.spec, SearchSpec):
        out["search"] = search_summary(report.spec)
        if report.grid_points is not None:
            out["search"]["grid_points"] = report.grid_points
    return out


def _worker_table(spec: ClusterSpec) -> Table:
    title = f"cluster {spec.name!r}: ray {spec.ray.address}"
    if spec.ray.dashboard_url is not None:
        title += f", dashboard {spec.ray.dashboard_url}"
    table = Table(title=title, title_justify="left")
    for column in ("worker", "node", "host", "GPUs", "GPU share", "memory cap", "CPUs"):
        table.add_column(column)
    for slot in spec.worker_slots():
        table.add_row(
            slot.worker_id,
            slot.node,
            slot.host,
            slot.cuda_visible_devices or "-",
            f"{slot.gpu_share:g}",
            f"{slot.memory_cap_mb} MB" if slot.memory_cap_mb is not None else "-",
            f"{slot.cpus:g}",
        )
    return table


def _render(report: FileReport, out: Console, err: Console) -> None:
    if not report.valid:
        for message in report.errors:
            err.print(f"error: {message}", markup=False, highlight=False)
        return
    out.print(f"{report.file}: valid {report.kind} file", markup=False, highlight=False)
    for warning in report.warnings:
        err.print(f"warning: {report.file}: {warning}", markup=False, highlight=False)
    if isinstance(report.spec, ClusterSpec):
        out.print(_worker_table(report.spec))
        note = head_paths_note(report.spec)
        if note is not None:
            out.print(f"  note: {note}", markup=False, highlight=False)
        if report.dashboard is not None:
            stream = out if report.dashboard.ok else err
            prefix = "  " if report.dashboard.ok else f"error: {report.file}: "
            stream.print(prefix + report.dashboard.message(), markup=False, highlight=False)
    elif isinstance(report.spec, SearchSpec):
        for key, value in search_summary(report.spec).items():
            if value is None or (key == "overrides" and not value):
                continue
            shown = ", ".join(value) if isinstance(value, list) else value
            out.print(f"  {key}: {shown}", markup=False, highlight=False)
        if report.grid_points is not None:
            out.print(f"  grid_points: {report.grid_points}", markup=False, highlight=False)


def run(args: argparse.Namespace) -> int:
    """Validate every file in ``args.files``; 0 when all are valid, 2 otherwise."""
    reports = [check_file(path) for path in args.files]
    if args.check_dashboard:
        env = dict(os.environ)
        reports = [check_dashboard(r, env, args.timeout) for r in reports]
    if args.json:
        sys.stdout.write(json.dumps([_to_json(r) for r in reports], indent=2) + "\n")
    else:
        out = Console(file=sys.stdout, soft_wrap=True, emoji=False)
        err = Console(file=sys.stderr, soft_wrap=True, emoji=False)
        for report in reports:
            _render(report, out, err)
    if not all(r.valid for r in reports):
        return EXIT_BAD_INPUT
    if any(r.dashboard is not None and not r.dashboard.ok for r in reports):
        return EXIT_UNREACHABLE
    return EXIT_OK
