"""The layout of a search directory, and ``chief.json``, which lets CLI
commands and workers find the live chief."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from orchestrator.errors import ChiefUnavailableError, SearchDirError

CHIEF_FILE = "chief.json"
LEDGER_FILE = "ledger.db"
TRIALS_DIR = "trials"
LOG_FILE = "chief.log"
# Only the search's owner may read it: the ledger holds lease tokens, the
# directory the token (docs/security.md).
SEARCH_DIR_MODE = 0o700
CHIEF_FILE_MODE = 0o600


@contextmanager
def private_files() -> Iterator[None]:
    """Create files 0600 and directories 0700 in the ``with`` block, whatever the
    umask (for writers that take no mode: matplotlib, tempfile's callers, mkdir
    with parents). The umask is per process: use it where nothing else writes
    files concurrently (the report's child process, the CLI)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@dataclass(frozen=True)
class ChiefInfo:
    """What ``chief.json`` says about the chief serving a search."""

    address: str  # host:port that workers and the CLI dial
    bind: str  # host:port the server bound
    pid: int
    token_file: str
    search_id: str
    started_at: float
    tls_ca: str | None = None
    tls_server_name: str | None = None
    running: bool = True

    @property
    def port(self) -> int:
        return int(self.bind.rsplit(":", 1)[1])

    def process_alive(self) -> bool:
        """True when the recorded pid is a live process (not a zombie)."""
        try:
            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write JSON to a temp file and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_chief_info(search_dir: Path, info: ChiefInfo) -> None:
    write_json_atomic(search_dir / CHIEF_FILE, asdict(info), mode=CHIEF_FILE_MODE)


def read_chief_info(search_dir: Path) -> ChiefInfo:
    """The chief record; ChiefUnavailableError when there is none (its subclass
    SearchDirError when the directory holds no search at all)."""
    path = Path(search_dir) / CHIEF_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        if not (Path(search_dir) / LEDGER_FILE).exists():
            raise SearchDirError(
                f"{search_dir}: not a search directory (no {LEDGER_FILE}); "
                "pass the directory `ktc submit` printed"
            ) from exc
        raise ChiefUnavailableError(f"{path}: no chief has served this search yet") from exc
    except ValueError as exc:
        raise ChiefUnavailableError(f"{path}: unreadable ({exc})") from exc
    return ChiefInfo(**data)


def require_search_dir(search_dir: Path) -> Path:
    """The directory, checked to hold a ledger (SearchDirError, bad input, if not)."""
    path = Path(search_dir)
    if not (path / LEDGER_FILE).is_file():
        raise SearchDirError(
            f"{path}: not a search directory (no {LEDGER_FILE}); "
            "pass the directory that `ktc submit` printed"
        )
    return path
