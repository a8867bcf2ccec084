"""The cluster file a user chose with ``ktc use``, remembered per user.

``ktc use CLUSTER.yaml`` writes ``<config dir>/cluster.json``: the file's
absolute path, the cluster's name, and the sha256 of the file's bytes when it
was chosen. The config dir is ``$XDG_CONFIG_HOME/ktcluster``, else
``~/.config/ktcluster``; it is made 0700 and the file 0600 (the file names
where a user's searches run, which is nobody else's business).

**The path is what is remembered, not a copy.** Every reader loads and
validates the file again (:func:`remembered_cluster`), so an edit to the
cluster file (a new ``ray.address`` after ``ktc cluster up``, a renewed TLS
cert) takes effect at once, and relative TLS paths still resolve against the
file's own folder. A copy would go stale without a word. The hash is kept only
to tell the user that the file changed since they chose it; a changed file is
used as it now is.

Environment variables are passed in (``env``), never read here: the CLI reads
``os.environ`` once, at start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.cluster import ClusterSpec
from orchestrator.config.loader import load_cluster
from orchestrator.errors import ConfigError

SETTINGS_DIR_NAME = "ktcluster"
CLUSTER_FILE_NAME = "cluster.json"
SETTINGS_DIR_MODE = 0o700
SETTINGS_FILE_MODE = 0o600
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ClusterChoice:
    """What ``cluster.json`` records: the file ``ktc use`` was given."""

    path: Path  # absolute, as given (symlinks are not resolved: a link may be the point)
    name: str  # the cluster's name when it was chosen
    sha256: str  # of the file's bytes when it was chosen


@dataclass(frozen=True)
class RememberedCluster:
    """The remembered cluster file, loaded and validated as it is now."""

    choice: ClusterChoice
    spec: ClusterSpec
    changed: bool  # the file's bytes differ from when it was chosen

    @property
    def path(self) -> Path:
        """The cluster file's absolute path."""
        return self.choice.path


def settings_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/ktcluster``, else ``~/.config/ktcluster``.

    The XDG spec says a relative ``XDG_CONFIG_HOME`` is invalid and must be
    ignored, so it is.
    """
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / SETTINGS_DIR_NAME
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".config" / SETTINGS_DIR_NAME


def choice_file(env: Mapping[str, str]) -> Path:
    """Where the remembered cluster file is recorded."""
    return settings_dir(env) / CLUSTER_FILE_NAME


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remember_cluster(cluster_file: str | Path, env: Mapping[str, str]) -> RememberedCluster:
    """Validate ``cluster_file`` and remember it; ConfigError (nothing written) if invalid."""
    path = Path(os.path.abspath(Path(cluster_file).expanduser()))
    spec = load_cluster(path)
    choice = ClusterChoice(path=path, name=spec.name, sha256=_sha256(path))
    _write_choice(choice_file(env), choice)
    return RememberedCluster(choice=choice, spec=spec, changed=False)


def forget_cluster(env: Mapping[str, str]) -> ClusterChoice | None:
    """Forget the remembered cluster file; returns what was forgotten, if anything."""
    target = choice_file(env)
    try:
        previous = read_choice(env)
    except ConfigError:
        previous = None  # an unreadable record is forgotten all the same
    target.unlink(missing_ok=True)
    return previous


def read_choice(env: Mapping[str, str]) -> ClusterChoice | None:
    """The recorded choice (without loading the cluster file), or None."""
    target = choice_file(env)
    try:
        text = target.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"{target}: cannot read the cluster file remembered by `ktc use` "
            f"({exc.strerror or exc}); expected a readable file. Fix its permissions, or "
            "run `ktc use --clear`."
        ) from exc
    try:
        data = json.loads(text)
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {SCHEMA_VERSION}")
        choice = ClusterChoice(
            path=Path(str(data["path"])), name=str(data["name"]), sha256=str(data["sha256"])
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{target}: the record of `ktc use` is unreadable ({exc}); expected the JSON "
            "that `ktc use CLUSTER.yaml` writes. Run `ktc use CLUSTER.yaml` again, or "
            "`ktc use --clear`."
        ) from None
    if not choice.path.is_absolute():
        raise ConfigError(
            f"{target}: the remembered cluster file {str(choice.path)!r} is not an absolute "
            "path; expected one. Run `ktc use CLUSTER.yaml` again."
        )
    return choice


def remembered_cluster(env: Mapping[str, str]) -> RememberedCluster | None:
    """The remembered cluster file, loaded and validated now; None when none is set.

    A file that no longer exists or no longer validates is a ConfigError that
    names it and says how to choose again.
    """
    choice = read_choice(env)
    if choice is None:
        return None
    if not choice.path.is_file():
        raise ConfigError(
            f"the cluster file remembered by `ktc use`, {choice.path}, no longer exists; "
            "expected the file you chose (cluster "
            f"{choice.name!r}). Run `ktc use CLUSTER.yaml` with its new path, or "
            "`ktc use --clear` to go back to the embedded local Ray."
        )
    spec = load_cluster(choice.path)
    return RememberedCluster(
        choice=choice, spec=spec, changed=_sha256(choice.path) != choice.sha256
    )


def cluster_file_for(explicit: str | None, env: Mapping[str, str]) -> str | None:
    """The cluster file a verb should use: ``--cluster`` if given, else the one
    ``ktc use`` remembered, else None (the embedded local Ray)."""
    if explicit is not None:
        return explicit
    choice = read_choice(env)
    return None if choice is None else str(choice.path)


def _write_choice(target: Path, choice: ClusterChoice) -> None:
    folder = target.parent
    folder.mkdir(mode=SETTINGS_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, SETTINGS_DIR_MODE)  # ours: tighten whatever the umask or an older run made
    data = {
        "version": SCHEMA_VERSION,
        "path": str(choice.path),
        "name": choice.name,
        "sha256": choice.sha256,
    }
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, SETTINGS_FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
