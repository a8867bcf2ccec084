"""Whether a path names a file (or folder) this machine can read, in one rule.

Every path a config names and every config file the CLI reads goes through
:func:`path_problem`: the dataset's paths, the TLS files, the search and
cluster files themselves (``ktc validate``, ``submit``, ``scale --apply``).
Only a regular file is a file here. Opening a FIFO for reading blocks until a
writer comes (``ktc validate fifo`` hung), and a device such as ``/dev/zero``
never ends, so both are refused by their type before anything opens them.

:func:`open_regular_file` closes the gap between that check and the open: it
opens without blocking and checks the type of what it opened.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal

PathKind = Literal["file", "directory"]


def _missing(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symlink loop (following its links comes back to a link already seen)"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"is a symlink to {os.readlink(path)!r}, which does not exist"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "does not exist"
    if exc.errno == errno.EACCES:
        return "is not readable (permission denied)"
    if exc.errno == errno.ENAMETOOLONG:
        return "is too long a path for this system"
    return f"cannot be read ({exc.strerror or exc})"


def _type_name(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def kind_problem(mode: int, kind: PathKind) -> str | None:
    """Why an ``os.stat`` mode is not a ``kind`` (regular file or directory), or None."""
    if kind == "directory":
        return None if stat.S_ISDIR(mode) else "is a file, not a directory"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    shown = _type_name(mode)
    return f"is {shown}, not a regular file" if shown else "is not a regular file"


def path_problem(path: Path, kind: PathKind) -> str | None:
    """Why ``path`` cannot be read as a ``kind`` on this machine, or None.

    The answer completes a sentence that starts with the path: ``does not
    exist``, ``is a symlink loop (...)``, ``is not a regular file (a FIFO
    ...)``, ``is a directory, not a file``, ``is not readable (...)``.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return _missing(path, exc)
    except ValueError:  # a NUL byte: no system call can take the path
        return "is not a valid path (it contains a NUL character)"
    problem = kind_problem(mode, kind)
    if problem is not None:
        return problem
    if not os.access(path, os.R_OK | (os.X_OK if kind == "directory" else 0)):
        return "is not readable (permission denied)"
    return None


def open_regular_file(path: Path) -> BinaryIO | str:
    """``path`` opened for binary reading, or why it cannot be (see :func:`path_problem`).

    The file is opened with ``O_NONBLOCK`` and its type checked on the open
    descriptor, so a FIFO swapped in after :func:`path_problem` answered still
    cannot block the caller.
    """
    problem = path_problem(path, "file")
    if problem is not None:
        return problem
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        return _missing(path, exc)
    try:
        problem = kind_problem(os.fstat(fd).st_mode, "file")
    except OSError as exc:
        problem = _missing(path, exc)
    if problem is not None:
        os.close(fd)
        return problem
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
