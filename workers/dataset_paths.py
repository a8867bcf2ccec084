"""Whether a search's dataset paths can be read on this machine.

The config's validators check the paths when a search file is loaded on the
submitting machine. On a remote Ray cluster the paths are the workers', so each
worker (and each evaluation worker) checks them again on its own machine before
its first trial, and names its host in the error.
"""

from __future__ import annotations

import re
import socket

from pydantic import ValidationError

from orchestrator.config import SearchSpec
from orchestrator.errors import DatasetUnavailableError

_SUBMIT_HINTS = re.compile(r" \(looked for [^)]*\)| Fix the path or run from the right folder\.")


def dataset_path_problems(search_json: str) -> list[str]:
    """Why the search's dataset paths cannot be read on this machine (empty when they can).

    The config's own path checks (``DatasetSpec``'s validators) run again here:
    on a remote cluster ``ktc submit`` could not run them, because the paths are
    the workers', not the submitting machine's.
    """
    try:
        SearchSpec.model_validate_json(search_json, context={"check_paths": True})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            key = ".".join(str(part) for part in error["loc"])
            text = str(cause) if cause is not None else error["msg"]
            # The config's hints are about the submitting machine's current
            # folder; here the path is already absolute and the fix is below.
            problems.append(f"{key}: {_SUBMIT_HINTS.sub('', text).strip()}")
        return problems
    return []


def require_dataset_paths(search_json: str, *, who: str) -> None:
    """Raise DatasetUnavailableError, naming ``who`` and this host, unless the
    dataset paths of ``search_json`` can be read on this machine."""
    problems = dataset_path_problems(search_json)
    if problems:
        raise DatasetUnavailableError(
            f"{who} on {socket.gethostname()}: "
            + "; ".join(problems)
            + " On a Ray cluster the dataset is read on each worker's machine: put it at this "
            "path on every worker node (or on shared storage), or fix the path."
        )
