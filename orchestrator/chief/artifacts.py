"""Trial artifacts (checkpoints, build configs) stored by the chief.

Workers need no shared filesystem: a Hyperband continuation downloads its
parent's checkpoint from here, and ``ktc export`` reads the best trial's files
from here. Files live under ``<search_dir>/trials/<trial_id>/`` and are written
to a temporary name, checked, then renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from orchestrator.chief.limits import GIB
from orchestrator.errors import InvalidRequestError, LimitExceededError, NotFoundError
from orchestrator.protocol.names import check_artifact_name, check_trial_id

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
MAX_ARTIFACT_BYTES = 4 * 1024**3
# An upload checks the disk's free space again after each this many bytes.
DISK_CHECK_BYTES = 64 * 1024**2


class ArtifactStore:
    """Files per trial under one root. Safe for concurrent writers of different files.

    Every path is built from a checked trial id and artifact name
    (:mod:`orchestrator.protocol.names`), then resolved: it must be the plain
    ``<root>/<trial_id>/<name>``, with no symlink on the way, or the call is
    refused. Files are written 0600 and directories 0700.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _root_resolved(self) -> Path:
        return self.root.resolve()

    def trial_dir(self, trial_id: str) -> Path:
        check_trial_id(trial_id)
        base = self._root_resolved() / trial_id
        if base.is_symlink() or (base.exists() and base.resolve() != base):
            raise InvalidRequestError(
                f"trial_id {trial_id!r}: the trial's artifact directory is a link; "
                "artifacts are only served from plain directories under trials/"
            )
        return base

    def path(self, trial_id: str, name: str) -> Path:
        """``<root>/<trial_id>/<name>``, checked to stay there (no '..', no links)."""
        check_artifact_name(name)
        base = self.trial_dir(trial_id)
        target = base / name
        resolved = target.resolve()
        # resolve() follows every link on the way: a path that resolves anywhere
        # but to itself went through a link, possibly out of the trial's directory.
        if resolved != target or not resolved.is_relative_to(base):
            raise InvalidRequestError(
                f"artifact {name!r} of trial {trial_id}: the path leaves trials/{trial_id}/ "
                "(through a link); artifacts are plain files under the trial's directory"
            )
        return target

    def trial_bytes(self, trial_id: str, *, excluding: str = "") -> int:
        """The bytes the trial's artifacts take, leaving out ``excluding``."""
        base = self.trial_dir(trial_id)
        if not base.is_dir():
            return 0
        return sum(
            p.lstat().st_size
            for p in base.rglob("*")
            if p.is_file() and not p.is_symlink() and str(p.relative_to(base)) != excluding
        )

    def write(
        self,
        trial_id: str,
        name: str,
        chunks: Iterable[bytes],
        *,
        expected_sha256: str | Callable[[], str] = "",
        max_bytes: int = MAX_ARTIFACT_BYTES,
        min_free_bytes: int = 0,
        declared_bytes: int = 0,
        guard: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> tuple[int, str]:
        """Stream ``chunks`` into the artifact (at most ``max_bytes``); returns (size, sha256).

        The finished file replaces any earlier one inside ``guard()``: the trial
        service passes the broker's check that the uploader still holds the
        attempt's lease, held across the rename, so an upload that outlived its
        lease (expired, or the attempt ended) keeps nothing.

        ``expected_sha256`` (or a callable giving it once the chunks are read) is
        checked before the file replaces any earlier one. The disk keeps
        ``min_free_bytes`` free: checked against ``declared_bytes`` before the
        first chunk and every :data:`DISK_CHECK_BYTES` written after it
        (:class:`LimitExceededError`, nothing kept). A declared size (not 0)
        must be the size sent."""
        target = self.path(trial_id, name)
        base = self.trial_dir(trial_id)
        # Before any directory is made: a refused upload leaves the folder as it was.
        self._check_no_clash(base, target, trial_id, name)
        existing = next(p for p in (base, *base.parents) if p.is_dir())
        self._check_disk(existing, declared_bytes, min_free_bytes, trial_id, name)
        # One level at a time: mkdir(parents=True) gives the parents the umask's mode.
        for directory in (base.parent, base, *reversed(target.parent.relative_to(base).parents)):
            (directory if directory.is_absolute() else base / directory).mkdir(
                mode=0o700, exist_ok=True
            )
        target.parent.mkdir(mode=0o700, exist_ok=True)
        target = self.path(trial_id, name)  # again: the directories exist now
        digest = hashlib.sha256()
        size = 0
        checked_at = 0
        # mkstemp creates the file 0600; os.replace keeps that mode.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if declared_bytes and size > declared_bytes:
                        raise self._size_mismatch(trial_id, name, declared_bytes, "more")
                    if size > max_bytes:
                        raise InvalidRequestError(
                            f"artifact {name!r} of trial {trial_id}: more than {max_bytes} "
                            "bytes; the chief keeps artifacts up to that size (see "
                            "docs/architecture.md, 'The trial protocol')"
                        )
                    if min_free_bytes and size - checked_at >= DISK_CHECK_BYTES:
                        checked_at = size
                        self._check_disk(target.parent, 0, min_free_bytes, trial_id, name)
                    digest.update(chunk)
                    handle.write(chunk)
            if declared_bytes and size != declared_bytes:
                raise self._size_mismatch(trial_id, name, declared_bytes, f"only {size}")
            sha = digest.hexdigest()
            if callable(expected_sha256):
                expected_sha256 = expected_sha256()
            if expected_sha256 and expected_sha256 != sha:
                raise InvalidRequestError(
                    f"artifact {name!r} of trial {trial_id}: checksum mismatch "
                    f"(expected {expected_sha256}, got {sha}); upload it again"
                )
            with guard():
                os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size, sha

    @staticmethod
    def _size_mismatch(trial_id: str, name: str, declared: int, sent: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"artifact {name!r} of trial {trial_id}: the first chunk's total_size declared "
            f"{declared} bytes, and {sent} bytes were sent; declare the file's size (or 0)"
        )

    @staticmethod
    def _check_no_clash(base: Path, target: Path, trial_id: str, name: str) -> None:
        """The name must not need a file where a folder is, or a folder where a file is."""
        if target.is_dir():
            raise InvalidRequestError(
                f"artifact {name!r} of trial {trial_id}: trials/{trial_id}/{name} is a folder "
                "of other artifacts; upload the file under another name"
            )
        for parent in target.relative_to(base).parents:
            folder = base / parent
            if folder != base and folder.exists() and not folder.is_dir():
                raise InvalidRequestError(
                    f"artifact {name!r} of trial {trial_id}: trials/{trial_id}/{parent} is "
                    "an artifact file, so it cannot hold other files; upload under another name"
                )

    @staticmethod
    def _check_disk(
        directory: Path, more_bytes: int, min_free_bytes: int, trial_id: str, name: str
    ) -> None:
        """Refuse to write when the disk would keep less than ``min_free_bytes`` free."""
        if not min_free_bytes:
            return
        free = shutil.disk_usage(directory).free
        if free - more_bytes >= min_free_bytes:
            return
        log.warning(
            "artifact %r of trial %s refused: the search directory's disk has %.2f GiB "
            "free, and %.2f GiB are kept for the ledger; free space on that disk",
            name, trial_id, free / GIB, min_free_bytes / GIB,
        )  # fmt: skip
        wanted = f" ({more_bytes} bytes)" if more_bytes else ""
        raise LimitExceededError(
            f"artifact {name!r} of trial {trial_id}{wanted} is not kept: the chief's disk "
            f"has {free / GIB:.2f} GiB free, and it keeps {min_free_bytes / GIB:.2f} GiB for "
            "the search's ledger. The trial's result is still recorded; free space on the "
            "disk of the chief's search directory to keep the next trials' files"
        )

    def open(self, trial_id: str, name: str) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of the artifact; NotFoundError when absent or not a plain file."""
        path = self.path(trial_id, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, OSError) as exc:
            raise NotFoundError(f"trial {trial_id} has no artifact {name!r}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise NotFoundError(f"trial {trial_id} has no artifact {name!r}")

        def chunks() -> Iterator[bytes]:
            with os.fdopen(fd, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk

        return info.st_size, chunks()

    def read(self, trial_id: str, name: str) -> Iterator[bytes]:
        """Yield the artifact in chunks; NotFoundError when absent."""
        return self.open(trial_id, name)[1]

    def remove_partial_uploads(self) -> list[Path]:
        """Delete the temporary files of uploads a killed chief left half-written
        (``.<name>.<random>``, never an artifact's name); returns them. Call only
        while no upload runs: when the chief starts."""
        root = self._root_resolved()
        if not root.is_dir():
            return []
        removed = []
        for path in root.rglob(".*"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
        if removed:
            log.info("removed %d partial upload(s) left by an earlier chief", len(removed))
        return removed

    def list(self, trial_id: str) -> list[str]:
        """The trial's artifact names (plain files; links and temporary files left out)."""
        base = self.trial_dir(trial_id)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        )


__all__ = ["ArtifactStore", "check_artifact_name", "check_trial_id"]
