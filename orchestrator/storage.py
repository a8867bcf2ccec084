"""The cluster's storage root: the folder that holds search directories.

A cluster file's ``storage:`` is a path on the head (or on storage the head
mounts), read and written by the chief only: search directories hold the
ledger, with its lease tokens, and the search token. So the root is made the
way a search directory is (``search_dir.SEARCH_DIR_MODE``, 0700, whatever the
umask), and a root someone else can rename entries in is refused: in a folder
that every user may write and that lacks the sticky bit, any user could move a
search directory away and put their own in its place.

The path is expanded (``~``) on the machine that calls these functions, which
is the head when the chief runs there as a Ray job; nothing here is meant to
run on the submitting machine.
"""

from __future__ import annotations

import os
import stat
import sys
from datetime import datetime
from pathlib import Path

from orchestrator.errors import ConfigError

STORAGE_DIR_MODE = 0o700  # orchestrator.search_dir.SEARCH_DIR_MODE (not imported: psutil)


def search_dir_name(search_name: str, now: datetime) -> str:
    """The name of a search's directory under the storage root: ``<name>-<YYYYmmdd-HHMMSS>``,
    like the default ``./searches/<name>-<stamp>`` of a foreground submit. Every writer
    under ``storage`` (the RayJob render, detached submits) names directories this way."""
    return f"{search_name}-{now:%Y%m%d-%H%M%S}"


def storage_root(storage: str) -> Path:
    """``storage`` as an absolute path on this machine (``~`` expanded here)."""
    path = Path(storage).expanduser()
    if not path.is_absolute():
        raise ConfigError(
            f"storage: expected an absolute path on this machine, got {storage!r} (after "
            f"expanding ~: {path}). Write an absolute path in the cluster file."
        )
    return path


def ensure_storage_root(storage: str) -> Path:
    """The storage root, created 0700 (with any missing parents, also 0700) if it is
    missing; ConfigError when it exists but cannot safely hold search directories."""
    root = storage_root(storage)
    missing: list[Path] = []
    probe = root
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=STORAGE_DIR_MODE)
        except FileExistsError:
            pass  # made meanwhile by another chief: checked below like any other
        except OSError as exc:
            raise ConfigError(
                f"storage {storage!r}: cannot create {folder} ({exc.strerror or exc}); "
                "expected a folder this user can create. Create it on the head, or fix "
                "its parent's permissions."
            ) from exc
        if folder == root:
            os.chmod(folder, STORAGE_DIR_MODE)  # whatever the umask made of it
    _check_root(storage, root)
    return root


def _check_root(storage: str, root: Path) -> None:
    try:
        info = root.stat()
    except OSError as exc:
        raise ConfigError(
            f"storage {storage!r}: cannot read {root} ({exc.strerror or exc}); expected a "
            "folder this user can use. Fix its permissions on the head."
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(
            f"storage {storage!r}: {root} is a file; expected a folder. Point storage at a "
            "folder, or move the file away."
        )
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"storage {storage!r}: {root} is writable by every user and lacks the sticky "
            f"bit (mode {stat.S_IMODE(info.st_mode):o}), so anyone could replace a search "
            "directory in it; expected a folder only its owner (or group) may write. Run "
            f"`chmod 700 {root}` on the head, or use another folder."
        )
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(
            f"storage {storage!r}: {root} is not writable by this user; expected a folder "
            "the chief can create search directories in. Fix its owner or permissions on "
            "the head."
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator.storage STORAGE``: make (or check) the storage root
    and print it. The RayJob that ``ktc cluster render --format kuberay-job``
    writes runs this on the head before ``ktc submit``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestrator.storage STORAGE", file=sys.stderr)
        return 2
    try:
        root = ensure_storage_root(args[0])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
