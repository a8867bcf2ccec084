"""Checks made on the submitting machine before Ray or the chief starts.

A search that cannot run should fail while nothing exists yet: no search
directory, no Ray, no chief, no worker crash loop. Loading the files already
checks every value, the hosts (by syntax) and, when Ray runs on this machine
(``ray.address: local``), the dataset paths. What is left needs the machine
itself, and lives here:

- user code named as ``module:attribute`` imports from the current directory;
- the hypermodel's overrides and options fit its space (the messages name the
  file and line, whichever file it is);
- the search directory can be created: not an existing file, not inside a
  file, not a folder that already holds a search;
- ``--workers`` is within ``fleet.max_workers`` (``ktc resume`` checks it too,
  against the cluster it resumes on).

``ktc validate`` runs the same checks (but only warns about a directory that
already holds a search: the file is fine, that folder is taken) and
``ktc submit`` runs them all before it creates anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.cluster import ClusterSpec, default_cluster
from orchestrator.config.errors_format import suggest
from orchestrator.config.loader import load_cluster, load_search_document
from orchestrator.config.search import SearchSpec
from orchestrator.config.user_code import check_importable
from orchestrator.config.yaml_source import KeyPath, YamlDocument
from orchestrator.errors import ConfigError

LEDGER_FILE = "ledger.db"  # orchestrator.search_dir.LEDGER_FILE (not imported: psutil)

# The hypermodel package names its keys as ``search.yaml: hypermodel.<path>: ...``
# (it checks specs that no longer have a file); the key path is re-anchored here.
_HYPERMODEL_MESSAGE = re.compile(r"^search\.yaml: (?P<key>hypermodel(?:\.[^\s:]+)*): (?P<rest>.*)$")


@dataclass(frozen=True)
class SubmitPlan:
    """What ``ktc submit`` runs, once every check passed."""

    search: SearchSpec
    cluster: ClusterSpec
    search_dir: Path


def check_hypermodel_space(spec: SearchSpec, doc: YamlDocument) -> None:
    """The hypermodel's overrides and options against its space, and the metric
    names the search reads against those it logs (no TensorFlow import)."""
    from workers.hypermodels import validate_overrides

    check_metric_names(spec, doc)

    try:
        validate_overrides(spec.hypermodel)
    except ConfigError as exc:
        match = _HYPERMODEL_MESSAGE.match(str(exc).strip())
        if match is None:
            raise ConfigError(f"{doc.source}: {str(exc).removeprefix('search.yaml: ')}") from None
        path: KeyPath = tuple(match["key"].split("."))
        raise doc.error(path, match["rest"]) from None


def check_metric_names(spec: SearchSpec, doc: YamlDocument) -> None:
    """``objective`` and ``early_stopping.monitor`` name metrics a built-in
    hypermodel logs: a typo (``val_acc``) would otherwise train every trial to the
    end and fail each one with ``KeyError``. User hypermodels log what their
    compile asks for, which is known only once a trial runs (the worker names
    the logged metrics then)."""
    from workers.hypermodels import logged_metrics

    known = logged_metrics(spec.hypermodel)
    if known is None:
        return
    reads: list[tuple[KeyPath, str]] = [(("objective", "name"), spec.objective.name)]
    if spec.training.early_stopping is not None:
        monitor = spec.training.early_stopping.monitor
        reads.append((("training", "early_stopping", "monitor"), monitor))
    for path, name in reads:
        if name not in known:
            raise doc.error(
                path,
                f"hypermodel {spec.hypermodel.name!r} logs no metric {name!r}"
                f"{suggest(name, known) or '.'} Expected one of the metrics it logs: "
                f"{', '.join(known)}. Use one of those.",
            )


@dataclass(frozen=True)
class DirProblem:
    """Why a search directory cannot be made at a path, and the fix."""

    text: str
    fix: str
    taken: bool = False  # the folder already holds a search


def search_dir_problem(path: Path) -> DirProblem | None:
    """Why a search directory cannot be made at ``path``, or None when it can."""
    try:
        if path.exists():
            if not path.is_dir():
                return DirProblem(
                    f"{path} is an existing file; expected a directory (new or empty)",
                    "Pick another path, or move the file away",
                )
            if (path / LEDGER_FILE).exists():
                return DirProblem(
                    f"{path} already holds a search; expected a new or empty directory",
                    f"Continue it with `ktc resume {path}`, or pick another path",
                    taken=True,
                )
            if not os.access(path, os.W_OK | os.X_OK):
                return DirProblem(
                    f"{path} is not writable; expected a directory this user can write",
                    "Pick another path, or fix its permissions",
                )
            return None
        ancestor = path.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return DirProblem(
                f"{ancestor} is a file, so {path} cannot be created inside it; expected a "
                "path under a directory",
                "Pick another path",
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return DirProblem(
                f"{ancestor} is not writable, so {path} cannot be created; expected a path "
                "this user can write",
                "Pick another path",
            )
    except OSError as exc:
        return DirProblem(
            f"{path} cannot be used ({exc.strerror or exc}); expected a directory path",
            "Pick another path",
        )
    return None


def _dir_error(
    search: SearchSpec, doc: YamlDocument, problem: DirProblem, dir_arg: str | None
) -> ConfigError:
    if dir_arg is not None:
        return ConfigError(f"--dir {dir_arg}: {problem.text}. {problem.fix}.")
    if search.output.directory is not None:
        return doc.error(("output", "directory"), f"{problem.text}. {problem.fix}.")
    fix = problem.fix[0].lower() + problem.fix[1:]
    return doc.error(
        ("name",) if "name" in doc.data else (),
        f"the default search directory {problem.text}. Set output.directory, pass --dir, or {fix}.",
    )


def check_search(
    spec: SearchSpec, doc: YamlDocument, *, search_path: list[str], taken_dir_is_error: bool
) -> str | None:
    """Every check of a loaded search file that needs this machine.

    Returns a warning when the search directory already holds a search and
    ``taken_dir_is_error`` is false (``ktc validate``); raises ConfigError otherwise.
    """
    check_importable(spec, search_path, source=doc.source, doc=doc)
    check_hypermodel_space(spec, doc)
    problem = search_dir_problem(spec.resolve_directory())
    if problem is None:
        return None
    if problem.taken and not taken_dir_is_error:
        return f"output directory {problem.text}; `ktc submit` will refuse it. {problem.fix}."
    raise _dir_error(spec, doc, problem, None)


def check_worker_count(
    workers: int | None, cluster: ClusterSpec, *, where: str, raise_cap: str
) -> None:
    """``--workers`` of ``submit`` or ``resume`` within ``fleet.max_workers`` of the
    cluster it runs on (``where`` names it; ``raise_cap`` says how to raise the cap)."""
    cap = cluster.fleet.max_workers
    if workers is not None and workers > cap:
        raise ConfigError(
            f"--workers {workers}: expected at most fleet.max_workers ({cap}) of {where}, got "
            f"{workers}. Lower --workers, or {raise_cap}."
        )


def plan_submit(
    search_file: str,
    cluster_file: str | None,
    *,
    dir_arg: str | None,
    workers: int | None,
    search_path: list[str],
) -> SubmitPlan:
    """Load and check everything ``ktc submit`` needs; ConfigError before anything starts.

    Dataset paths are checked only when Ray runs on this machine: on a remote
    cluster they are the workers' paths, not this machine's.
    """
    cluster = load_cluster(cluster_file) if cluster_file else default_cluster()
    search, doc = load_search_document(search_file, check_paths=cluster.is_local)
    check_importable(search, search_path, source=doc.source, doc=doc)
    check_hypermodel_space(search, doc)
    check_worker_count(
        workers,
        cluster,
        where=f"the cluster file {cluster_file}" if cluster_file else "the default cluster",
        raise_cap="raise fleet.max_workers in the cluster file",
    )
    search_dir = Path(dir_arg) if dir_arg else search.resolve_directory()
    problem = search_dir_problem(search_dir)
    if problem is not None:
        raise _dir_error(search, doc, problem, dir_arg)
    return SubmitPlan(search=search, cluster=cluster, search_dir=search_dir)
