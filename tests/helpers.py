"""Helpers shared by the chief's tests: waiting without fixed sleeps, specs,
and ledger inspection."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.config import SearchSpec, parse_search


def wait_until(
    predicate: Callable[[], object], timeout_s: float, *, interval_s: float = 0.02, what: str = ""
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what or predicate}")
        time.sleep(interval_s)


def make_search(
    oracle: Mapping[str, Any] | None = None,
    *,
    failure: Mapping[str, Any] | None = None,
    objective: str | Mapping[str, Any] = "score",
    name: str = "test",
    epochs: int | None = None,
    scheduler: Mapping[str, Any] | None = None,
) -> SearchSpec:
    """A SearchSpec for tests (objective ``score``, maximised, unless told)."""
    if isinstance(objective, str):
        objective = {"name": objective, "direction": "max"}
    data: dict[str, Any] = {
        "name": name,
        "hypermodel": "mlp",
        "objective": dict(objective),
        "oracle": dict(oracle or {"type": "random", "max_trials": 10, "seed": 1}),
    }
    if failure is not None:
        data["failure"] = dict(failure)
    if epochs is not None:
        data["training"] = {"epochs": epochs}
    if scheduler is not None:
        data["scheduler"] = dict(scheduler)
    return parse_search(data)


def float_space(name: str = "x") -> Any:
    """A keras_tuner space with one Float in [0, 1]."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Float(name, 0.0, 1.0)
    return hp


def ledger_rows(path: Path) -> list[tuple[int, str, str | None, int | None]]:
    """(seq, kind, trial_id, attempt) of every event, read with a separate connection."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [
            (int(seq), str(kind), trial_id, attempt)
            for seq, kind, trial_id, attempt in conn.execute(
                "SELECT seq, kind, trial_id, attempt FROM events ORDER BY seq"
            )
        ]


def final_counts(path: Path) -> Counter[tuple[str, str]]:
    """How many final (completed/failed) events each trial has, keyed (trial_id, kind)."""
    return Counter(
        (str(tid), kind) for _, kind, tid, _ in ledger_rows(path) if kind in ("completed", "failed")
    )


def readable_by_others(root: Path) -> list[str]:
    """Every path under ``root`` (itself included) with a group or other bit,
    as "<path from root's parent>: <mode>" (the search directory is private)."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)}: {oct(mode)}")
    return found
