"""Where a search's report and TensorBoard summaries live in its directory.

Kept apart from the modules that draw and write them, so the session and the
CLI can name the paths without importing matplotlib or TensorBoard.
"""

from __future__ import annotations

from pathlib import Path

REPORT_DIR = "report"
INDEX_FILE = "index.html"
TENSORBOARD_DIR = "tensorboard"


def report_index(search_dir: Path | str) -> Path:
    """The report's page of ``search_dir`` (whether or not it is written yet)."""
    return Path(search_dir) / REPORT_DIR / INDEX_FILE


def tensorboard_dir(search_dir: Path | str) -> Path:
    """The TensorBoard log directory of ``search_dir``."""
    return Path(search_dir) / TENSORBOARD_DIR
