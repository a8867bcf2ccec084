"""``ktc cluster up|down``: run Ray's cluster launcher on a rendered file.

We generate Ray's artifacts and hand them to ``ray up`` / ``ray down``; we do
not reimplement SSH bring-up.
"""

from __future__ import annotations

import enum
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DeployError

STDERR_TAIL_LINES = 20


class LauncherAction(str, enum.Enum):
    """What to ask Ray's launcher for."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class LauncherResult:
    """A finished ``ray up``/``ray down`` run (only successful runs are returned)."""

    argv: tuple[str, ...]
    returncode: int


def launcher_argv(action: LauncherAction, config_file: Path, ray_binary: str = "ray") -> list[str]:
    """``ray up -y FILE`` / ``ray down -y FILE``."""
    return [ray_binary, action.value, "-y", str(config_file)]


def find_ray_binary() -> str:
    """The ``ray`` executable on PATH; :class:`DeployError` with the fix if absent."""
    found = shutil.which("ray")
    if found is None:
        raise DeployError(
            "ktc cluster up/down: the `ray` command was not found on PATH; install Ray "
            "where you run ktc (`pip install 'ray[default]'`) or activate the environment "
            "that has it."
        )
    return found


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_TAIL_LINES:])


def run_launcher(
    action: LauncherAction, config_file: Path, *, timeout_s: float | None = None
) -> LauncherResult:
    """Run ``ray <action> -y <config_file>``, streaming stdout to ours.

    Raises :class:`DeployError` when ``ray`` is missing, times out, or exits
    non-zero (the message carries the last lines of its stderr and the usual
    fixes for SSH failures).
    """
    argv = launcher_argv(action, config_file, find_ray_binary())
    try:
        proc = subprocess.run(
            argv, stdout=None, stderr=subprocess.PIPE, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DeployError(
            f"ktc cluster {action.value}: `{' '.join(argv)}` did not finish within "
            f"{timeout_s} s; check that every host is reachable over SSH and retry."
        ) from exc
    except OSError as exc:
        raise DeployError(f"ktc cluster {action.value}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = _tail(proc.stderr or "")
        hint = (
            "If it is an SSH failure, check that `ssh -i <key> <user>@<host>` works for "
            "every node without a password prompt (--ssh-user/--ssh-key), that the hosts "
            "in the cluster YAML are reachable, and that ~/.ray/auth_token exists when Ray "
            "auth is on (`ray get-auth-token --generate`)."
        )
        raise DeployError(
            f"ktc cluster {action.value}: `{' '.join(argv)}` exited with code "
            f"{proc.returncode}.\n{tail}\n{hint}"
            if tail
            else f"ktc cluster {action.value}: `{' '.join(argv)}` exited with code "
            f"{proc.returncode} and printed nothing on stderr. {hint}"
        )
    return LauncherResult(argv=tuple(argv), returncode=proc.returncode)


def format_argv(argv: Sequence[str]) -> str:
    """``argv`` as one shell line (for ``--dry-run``)."""
    return shlex.join(argv)
