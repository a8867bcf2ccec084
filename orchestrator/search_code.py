"""A detached search's own code, kept on the head beside its ledger.

A search submitted as a Ray job (``orchestrator/jobs.py``) runs in the folder
Ray unpacked from the job's package: the user's ``ray.working_dir`` (their
``build_model``) and the search and cluster files
(``orchestrator/job_package.py``). Ray keeps that package only while jobs
use it, and the verbs that import the user's hypermodel or dataset later
(``ktc export ID``, ``ktc evaluate ID``) run as short jobs of their own, in
the head's working directory, where ``my_models`` is missing or, worse, is
another project's. So the search's job copies the folder it runs in to
``<search dir>/code`` before its chief starts (:func:`main`, in the job's
entrypoint), and the verbs run there (``orchestrator/remote_verbs.py``): the
code that trained the trials is the code that rebuilds them, whatever the
submitting machine's folder holds today.

The copy is made once: a resumed search keeps its first job's code.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import sys
import tempfile
from pathlib import Path

from orchestrator.errors import ConfigError

CODE_DIR = "code"
SEARCH_DIR_MODE = 0o700  # orchestrator.search_dir.SEARCH_DIR_MODE (not imported: psutil)


def code_dir_on_head(search_dir: str) -> str:
    """``<search dir>/code``, where a detached search keeps its code (a path on the head)."""
    return posixpath.join(search_dir, CODE_DIR)


def keep_code(source: Path, search_dir: Path) -> Path:
    """Copy ``source`` to ``search_dir/code`` unless a copy is there already; its path.

    The copy lands under a temporary name and is renamed into place, so a
    job killed meanwhile leaves no half copy that a verb would run with.
    """
    target = search_dir / CODE_DIR
    if target.is_dir():
        return target
    try:
        search_dir.mkdir(mode=SEARCH_DIR_MODE, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{CODE_DIR}-", dir=search_dir))
        shutil.copytree(source, partial, symlinks=True, dirs_exist_ok=True)
        os.replace(partial, target)
    except OSError as exc:
        raise ConfigError(
            f"{target}: cannot keep the search's code there ({exc.strerror or exc}); expected "
            "a search directory the chief can write, under the cluster's storage. Fix the "
            "storage folder's permissions on the head."
        ) from exc
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator.search_code SEARCH_DIR``: keep this folder (the job's
    unpacked package) as the search's code; the search job's entrypoint runs it."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.search_code SEARCH_DIR", file=sys.stderr)
        return 2
    try:
        keep_code(Path.cwd(), Path(args[0]).expanduser())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
