"""Reaching a cluster's Ray dashboard (``ray.dashboard``), where Ray's Jobs API lives.

:func:`probe_dashboard` asks ``GET /api/version``: the endpoint Ray's own
``JobSubmissionClient`` checks first. Ray serves it only with Ray's token when
token auth is on, so one request says whether the server answers, whether it
is Ray's, and whether this machine's token is accepted. It uses the standard
library with a timeout: Ray's client (``requests`` with no timeout) waits for
the operating system's connect timeout, minutes, on a host that drops packets.

:func:`find_ray_token` looks where Ray looks, in Ray's order: the
``RAY_AUTH_TOKEN`` variable, the file ``RAY_AUTH_TOKEN_PATH`` names, then
``~/.ray/auth_token``. The environment is passed in. The token is sent, never
logged nor put in a message.
"""

from __future__ import annotations

import enum
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 5.0
VERSION_PATH = "/api/version"


@dataclass(frozen=True)
class RayToken:
    """Ray's token, and where it was found (for messages: never the value)."""

    value: str
    source: str


def find_ray_token(env: Mapping[str, str]) -> RayToken | None:
    """This machine's Ray token, looked for as Ray looks for it; None if there is none."""
    value = env.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return RayToken(value, "RAY_AUTH_TOKEN")
    named = env.get("RAY_AUTH_TOKEN_PATH")
    home = env.get("HOME") or str(Path.home())
    path = Path(named).expanduser() if named else Path(home) / ".ray" / "auth_token"
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return RayToken(value, str(path)) if value else None


class DashboardState(str, enum.Enum):
    """What one request to the dashboard found."""

    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    NEEDS_TOKEN = "needs-token"  # 401: token auth is on and no token was sent
    TOKEN_REFUSED = "token-refused"  # 403: the token sent is not the cluster's
    NOT_RAY = "not-ray"  # something answered, but not Ray's dashboard


@dataclass(frozen=True)
class DashboardProbe:
    """The outcome of :func:`probe_dashboard`."""

    url: str
    state: DashboardState
    detail: str = ""  # the error, or what answered instead of Ray
    ray_version: str | None = None
    token_source: str | None = None

    @property
    def ok(self) -> bool:
        """True when Ray's dashboard answered and accepted this machine."""
        return self.state is DashboardState.REACHABLE

    def message(self) -> str:
        """One line for the user: what was found, and the fix when it is a problem."""
        where = f"ray.dashboard {self.url}"
        if self.state is DashboardState.REACHABLE:
            auth = f", with the token from {self.token_source}" if self.token_source else ""
            return f"{where}: Ray {self.ray_version} answers{auth}."
        if self.state is DashboardState.UNREACHABLE:
            return (
                f"{where}: no answer ({self.detail}); expected Ray's dashboard there. Check "
                "that the head is up and its dashboard listens there (`ray start --head "
                "--dashboard-host 0.0.0.0` to listen beyond loopback, or an SSH tunnel), "
                "and fix ray.dashboard."
            )
        if self.state is DashboardState.NEEDS_TOKEN:
            return (
                f"{where}: the dashboard asks for Ray's token (token auth is on) and this "
                "machine has none (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); "
                "expected the cluster's token. Copy the head's ~/.ray/auth_token to "
                "~/.ray/auth_token here (mode 0600)."
            )
        if self.state is DashboardState.TOKEN_REFUSED:
            return (
                f"{where}: the dashboard refused the token from {self.token_source}; expected "
                "the cluster's token. Copy the head's ~/.ray/auth_token over it."
            )
        return (
            f"{where}: something answered, but not Ray's dashboard ({self.detail}); expected "
            "Ray's Jobs API. Fix ray.dashboard (the dashboard's port is 8265 by default, "
            "not the GCS's 6379)."
        )


def probe_dashboard(
    url: str, *, token: RayToken | None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DashboardProbe:
    """``GET url/api/version`` once, with ``token`` if given; never raises for network errors."""
    request = urllib.request.Request(url.rstrip("/") + VERSION_PATH, method="GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.value}")
    source = token.source if token is not None else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            state = DashboardState.TOKEN_REFUSED if token else DashboardState.NEEDS_TOKEN
            return DashboardProbe(url, state, "HTTP 401", token_source=source)
        if exc.code == 403:
            return DashboardProbe(
                url, DashboardState.TOKEN_REFUSED, "HTTP 403", token_source=source
            )
        return DashboardProbe(url, DashboardState.NOT_RAY, f"HTTP {exc.code}", token_source=source)
    except http.client.HTTPException as exc:  # answered, but not in HTTP/1 (Ray's GCS port)
        # The exception's text is the peer's bytes (binary for gRPC): name its type only.
        return DashboardProbe(
            url, DashboardState.NOT_RAY, f"it does not speak HTTP/1.1: {type(exc).__name__}"
        )
    except (urllib.error.URLError, OSError) as exc:  # timeouts included
        reason = getattr(exc, "reason", exc)
        return DashboardProbe(url, DashboardState.UNREACHABLE, str(reason) or type(exc).__name__)
    try:
        data = json.loads(body)
        version = str(data["ray_version"])
    except (ValueError, KeyError, TypeError):
        return DashboardProbe(
            url, DashboardState.NOT_RAY, "no ray_version in its answer", token_source=source
        )
    return DashboardProbe(url, DashboardState.REACHABLE, ray_version=version, token_source=source)
