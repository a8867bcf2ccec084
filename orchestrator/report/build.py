"""Build ``DIR/report/``: read the ledger, draw the pictures, write ``index.html``.

The folder is built beside the old one and swapped in with two renames, so a
reader (a browser reloading the page) sees the old report or the new one,
never half of one, and a failed build leaves the old report in place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from orchestrator.report.data import ReportData, read_report_data
from orchestrator.report.html import render_index
from orchestrator.report.paths import INDEX_FILE, REPORT_DIR
from orchestrator.report.plots import render_pictures
from orchestrator.search_dir import private_files

log = logging.getLogger(__name__)


def build_report(
    search_dir: Path | str, *, data: ReportData | None = None, processes: int = 1
) -> Path:
    """Write ``search_dir/report/`` from the ledger; returns the path of its index.html.

    Raises :class:`~orchestrator.errors.SearchDirError` for a directory without
    a ledger and :class:`~orchestrator.errors.LedgerError` for one that cannot
    be read (:func:`~orchestrator.report.data.read_report_data`). ``processes``:
    see :func:`~orchestrator.report.plots.render_pictures`.
    """
    if data is None:
        data = read_report_data(search_dir)
    target = data.search_dir / REPORT_DIR
    # Private like the rest of the search directory (docs/security.md): the
    # page quotes hyperparameters and error messages.
    with private_files():
        staging = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.new-", dir=data.search_dir))
        try:
            pictures = render_pictures(data, staging, processes=processes)
            page = render_index(data, pictures, generated_at=time.time())
            (staging / INDEX_FILE).write_text(page, encoding="utf-8")
            _swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info(
        "report of %s: %d trials, %d pictures", data.search_dir, len(data.trials), len(pictures)
    )
    return target / INDEX_FILE


def _swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` (two renames; the old one is then deleted)."""
    old: Path | None = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{REPORT_DIR}.old-", dir=target.parent))
        old.rmdir()
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
