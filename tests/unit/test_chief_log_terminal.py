"""A trial that ends FAILED is shown once on the terminal: ``ktc submit`` prints
it as the trial's own line, so the chief's log record of it goes to chief.log
only (orchestrator/chief/chief_log.py, TRIAL_LINE)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from orchestrator.chief.chief_log import TRIAL_LINE, ChiefLog
from orchestrator.chief.events import TrialFailed
from orchestrator.chief.lifecycle import SearchLifecycle


@pytest.fixture
def terminal() -> Iterator[io.StringIO]:
    """A handler on the root logger, as ``logging.basicConfig`` leaves the CLI's."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_a_failed_trial_is_logged_to_the_file_only(terminal: io.StringIO, tmp_path: Path) -> None:
    chief_log = ChiefLog(tmp_path)
    chief_log.open()
    try:
        failed = TrialFailed.model_construct(error_message="KeyError: 'val_acc'")
        record = cast(Any, SimpleNamespace(trial_id="1"))
        SearchLifecycle._log_end(record, cast(Any, None), [failed])
        logging.getLogger("orchestrator.chief.lifecycle").warning("another warning")
    finally:
        chief_log.close()
    assert "trial 1 FAILED: KeyError: 'val_acc'" in chief_log.path.read_text()
    assert "FAILED" not in terminal.getvalue()
    assert "another warning" in terminal.getvalue()
    # Without a chief, nothing is filtered.
    logging.getLogger("orchestrator.chief.lifecycle").warning(
        "trial 2 FAILED: x", extra={TRIAL_LINE: True}
    )
    assert "trial 2 FAILED" in terminal.getvalue()
