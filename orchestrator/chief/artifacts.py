"""Trial artifacts (checkpoints, build configs) stored by the chief.

Workers need no shared filesystem: a Hyperband continuation downloads its
parent's checkpoint from here, and ``ktc export`` reads the best trial's files
from here. Files live under ``<search_dir>/trials/<trial_id>/`` and are written
to a temporary name, checked, then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from orchestrator.errors import InvalidRequestError

CHUNK_BYTES = 1024 * 1024
MAX_ARTIFACT_BYTES = 4 * 1024**3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_SAFE_TRIAL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def check_artifact_name(name: str) -> None:
    """Artifact names are relative paths of plain segments (no '..', no '/')."""
    if not name or len(name) > 255 or not _SAFE_NAME.match(name) or ".." in name.split("/"):
        raise InvalidRequestError(
            f"artifact name {name!r} is not allowed; expected a relative path of letters, "
            "digits, '_', '.', '-' segments (no '..', not absolute)"
        )


def check_trial_id(trial_id: str) -> None:
    if not _SAFE_TRIAL_ID.match(trial_id or ""):
        raise InvalidRequestError(f"trial id {trial_id!r} is malformed")


class ArtifactStore:
    """Files per trial under one root. Safe for concurrent writers of different files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def trial_dir(self, trial_id: str) -> Path:
        check_trial_id(trial_id)
        return self.root / trial_id

    def path(self, trial_id: str, name: str) -> Path:
        check_artifact_name(name)
        return self.trial_dir(trial_id) / name

    def write(
        self, trial_id: str, name: str, chunks: Iterable[bytes], *, expected_sha256: str = ""
    ) -> tuple[int, str]:
        """Stream ``chunks`` into the artifact; returns (size, sha256)."""
        target = self.path(trial_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_ARTIFACT_BYTES:
                        raise InvalidRequestError(
                            f"artifact {name!r} of trial {trial_id} exceeds "
                            f"{MAX_ARTIFACT_BYTES} bytes"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
            sha = digest.hexdigest()
            if expected_sha256 and expected_sha256 != sha:
                raise InvalidRequestError(
                    f"artifact {name!r} of trial {trial_id}: checksum mismatch "
                    f"(expected {expected_sha256}, got {sha}); upload it again"
                )
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size, sha

    def read(self, trial_id: str, name: str) -> Iterator[bytes]:
        """Yield the artifact in chunks; FileNotFoundError when absent."""
        path = self.path(trial_id, name)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def list(self, trial_id: str) -> list[str]:
        base = self.trial_dir(trial_id)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
