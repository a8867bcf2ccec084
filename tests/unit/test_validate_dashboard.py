"""``ktc validate`` and the cluster file's ``ray.dashboard`` (issue 16): nothing
dialled by default; ``--check-dashboard`` against a stand-in dashboard on
127.0.0.1 (Ray's ``/api/version`` and its token rules); the note about paths on
the head."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.ray_dashboard import (
    DashboardState,
    RayToken,
    find_ray_token,
    probe_dashboard,
)

TOKEN = "s3cret-token-value"


class _FakeDashboard(BaseHTTPRequestHandler):
    """Ray's dashboard as far as /api/version goes: 401 without a token, 403 with a wrong one."""

    seen: list[str | None] = []
    ray_version = "2.60.0"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        if self.path != "/api/version":
            self._answer(404, "not found")
        elif auth is None:
            self._answer(401, "Unauthorized: Missing authentication token")
        elif auth != f"Bearer {TOKEN}":
            self._answer(403, "Forbidden: Invalid authentication token")
        else:
            version = type(self).ray_version
            body = {"version": "3", "ray_version": version, "ray_commit": "x", "session_name": "s"}
            self._answer(200, json.dumps(body))

    def _answer(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def dashboard() -> Iterator[str]:
    """A stand-in dashboard on a free port of 127.0.0.1; yields HOST:PORT."""
    _FakeDashboard.seen = []
    _FakeDashboard.ray_version = metadata.version("ray")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeDashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no Ray token and no token variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cluster(tmp_path: Path, dashboard: str | None, auth: bool = True) -> Path:
    path = tmp_path / "c.yaml"
    ray = f"ray: {{address: '10.0.0.1:6379', auth: {str(auth).lower()}"
    ray += f", dashboard: '{dashboard}'}}" if dashboard else "}"
    path.write_text(f"{ray}\nstorage: /srv/ktc\nnodes:\n  - {{name: a, cpus: 2}}\n")
    return path


def test_validate_dials_nothing_by_default(
    env: Path, dashboard: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cluster(env, dashboard)
    assert main(["validate", str(path)]) == 0
    assert _FakeDashboard.seen == []
    out = capsys.readouterr().out
    assert "note: paths on the head: storage /srv/ktc. The chief reads them where it runs" in out


def test_check_dashboard_with_the_token(
    env: Path, dashboard: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (env / ".ray").mkdir()
    (env / ".ray" / "auth_token").write_text(TOKEN + "\n")
    path = _cluster(env, dashboard)
    assert main(["validate", str(path), "--check-dashboard"]) == 0
    out, err = capsys.readouterr()
    local = metadata.version("ray")
    assert f"ray.dashboard http://{dashboard}: Ray {local} answers, with the token from " in out
    assert TOKEN not in out + err
    assert _FakeDashboard.seen == [f"Bearer {TOKEN}"]
    assert main(["validate", str(path), "--check-dashboard", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["dashboard"] == f"http://{dashboard}"
    assert report["dashboard_check"]["state"] == "reachable"
    assert report["head_paths"] == [{"key": "storage", "path": "/srv/ktc"}]


def test_check_dashboard_without_or_with_a_wrong_token(
    env: Path, dashboard: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cluster(env, dashboard)
    assert main(["validate", str(path), "--check-dashboard"]) == 1
    err = capsys.readouterr().err
    assert "asks for Ray's token (token auth is on) and this machine has none" in err
    assert "Copy the head's ~/.ray/auth_token" in err

    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-cluster-token")
    assert main(["validate", str(path), "--check-dashboard"]) == 1
    err = capsys.readouterr().err
    assert "refused the token from RAY_AUTH_TOKEN; expected the cluster's token" in err
    assert "not-the-cluster-token" not in err

    # ray.auth: false sends no token, whatever this machine holds.
    assert main(["validate", str(_cluster(env, dashboard, auth=False)), "--check-dashboard"]) == 1
    assert _FakeDashboard.seen[-1] is None


def test_check_dashboard_unreachable_or_unset(
    env: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _cluster(env, f"127.0.0.1:{closed_port}")
    assert main(["validate", str(path), "--check-dashboard", "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert f"ray.dashboard http://127.0.0.1:{closed_port}: no answer (" in err
    assert "fix ray.dashboard" in err

    unset = _cluster(env, None)
    assert main(["validate", str(unset), "--check-dashboard"]) == 2
    assert "--check-dashboard, but the file sets no ray.dashboard" in capsys.readouterr().err


def test_probe_names_what_answered(dashboard: str) -> None:
    probe = probe_dashboard(f"http://{dashboard}/nothing-here", token=RayToken(TOKEN, "t"))
    assert probe.state is DashboardState.NOT_RAY and "HTTP 404" in probe.message()


def test_find_ray_token_looks_where_ray_looks(tmp_path: Path) -> None:
    named = tmp_path / "tok"
    named.write_text("from-file\n")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home")
    home = {"HOME": str(tmp_path)}
    assert find_ray_token({**home, "RAY_AUTH_TOKEN": "v"}) == RayToken("v", "RAY_AUTH_TOKEN")
    assert find_ray_token({**home, "RAY_AUTH_TOKEN_PATH": str(named)}) == RayToken(
        "from-file", str(named)
    )
    assert find_ray_token(home) == RayToken("from-home", str(tmp_path / ".ray" / "auth_token"))
    assert find_ray_token({"HOME": str(tmp_path / "none")}) is None


def test_probe_of_a_port_that_is_not_http(closed_port: int) -> None:
    """Ray's GCS port (gRPC) answers HTTP/1.1 with binary frames: named, not printed."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\xfe\xff binary")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        probe = probe_dashboard(f"http://127.0.0.1:{port}", token=None, timeout_s=5)
    finally:
        thread.join(timeout=10)
        server.close()
    assert probe.state is DashboardState.NOT_RAY
    assert "it does not speak HTTP/1.1: BadStatusLine" in probe.message()
    assert "\x00" not in probe.message()


def test_check_dashboard_warns_about_another_ray_version(
    env: Path, dashboard: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _FakeDashboard.ray_version = "2.1.0"
    (env / ".ray").mkdir()
    (env / ".ray" / "auth_token").write_text(TOKEN)
    path = _cluster(env, dashboard)
    assert main(["validate", str(path), "--check-dashboard"]) == 0
    err = capsys.readouterr().err
    assert f"the cluster runs Ray 2.1.0, this machine Ray {metadata.version('ray')}" in err
