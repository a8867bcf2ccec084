"""The chief keeps a disk reserve for its ledger: an artifact that would eat
into it is refused before its first byte, or as soon as a check during the
stream sees the disk fall below it, and nothing of it is kept."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from orchestrator.chief import artifacts
from orchestrator.chief.artifacts import ArtifactStore
from orchestrator.errors import LimitExceededError

Usage = namedtuple("Usage", "total used free")


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_an_upload_that_would_leave_less_than_the_reserve_is_refused_up_front(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path / "trials")
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(LimitExceededError, match=r"for the search's ledger") as caught:
        store.write("0", "model.h5", [b"x" * 10], min_free_bytes=free + 1024**3)
    assert "artifact 'model.h5' of trial 0 is not kept" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # not even the trial's folder
    # The size it declares counts too: room for 10 bytes, not for 2 GiB more.
    with pytest.raises(LimitExceededError, match=r"\(2147483648 bytes\)"):
        store.write(
            "0", "model.h5", [b"x"], min_free_bytes=free - 1024**3, declared_bytes=2 * 1024**3
        )
    assert store.write("0", "model.h5", [b"x" * 10], min_free_bytes=1024**2)[0] == 10


def test_a_disk_that_fills_during_the_stream_stops_it_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "trials")
    store.write("0", "model.h5", [b"old"])
    # Another writer fills the disk while this upload streams: 10 KiB free at
    # first, 1 KiB less per check; the reserve is 5 KiB; a check per 1 KiB.
    monkeypatch.setattr(artifacts, "DISK_CHECK_BYTES", 1024)
    frees = iter(range(10 * 1024, 0, -1024))
    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda path: Usage(1 << 40, 0, next(frees)))
    with pytest.raises(LimitExceededError, match=r"has 0\.00 GiB free"):
        store.write("0", "model.h5", [b"y" * 1024] * 20, min_free_bytes=5 * 1024)
    # Checked at the start (10 KiB free) and after each KiB, until 4 KiB < 5 KiB.
    assert next(frees) == 3 * 1024
    assert _files(tmp_path) == ["model.h5"]  # no temporary file left
    assert (tmp_path / "trials" / "0" / "model.h5").read_bytes() == b"old"


def test_no_reserve_no_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> Usage:
        raise AssertionError("disk_usage called without a reserve")

    monkeypatch.setattr(artifacts.shutil, "disk_usage", fail)
    assert ArtifactStore(tmp_path).write("0", "a", [b"z"] * 3)[0] == 3
