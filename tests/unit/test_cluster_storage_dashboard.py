"""The cluster file's ``ray.dashboard`` and ``storage:`` (issue 16): spelling,
the paths the chief reads, warnings; and the storage root made 0700 on the head."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.config import parse_cluster
from orchestrator.errors import ConfigError
from orchestrator.storage import ensure_storage_root, storage_root

NODES = "nodes:\n  - {name: a, cpus: 2}\n"


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("10.0.0.1:8265", "http://10.0.0.1:8265"),
        ("head.example.com:8265", "http://head.example.com:8265"),
        ("http://127.0.0.1:8265", "http://127.0.0.1:8265"),
        ("https://ray.example.com:443/", "https://ray.example.com:443"),
        ("'[::1]:8265'", "http://[::1]:8265"),
    ],
)
def test_dashboard_url(value: str, url: str) -> None:
    spec = parse_cluster(f"ray: {{dashboard: {value}}}\n{NODES}", "c.yaml")
    assert spec.ray.dashboard_url == url


def test_no_dashboard_by_default() -> None:
    spec = parse_cluster(NODES, "c.yaml")
    assert spec.ray.dashboard is None and spec.ray.dashboard_url is None
    assert spec.storage is None and spec.chief_paths == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("head", r"c\.yaml:1: ray\.dashboard: expected HOST:PORT .*got 'head'\. Add the port"),
        ("'ray://h:10001'", r"not the Ray client's ray://HOST:10001"),
        ("'h:70000'", r"port 70000 is out of range; expected 1\.\.65535"),
        ("'h:0'", r"port 0 is out of range; expected 1\.\.65535"),
        ("'ftp://h:21'", r"expected HOST:PORT of the Ray dashboard"),
        ("'h h:8265'", r"for the Ray dashboard's host, got 'h h': it contains ' '"),
        ("8265", r"ray\.dashboard: expected a string, got 8265 \(int\)"),
    ],
)
def test_bad_dashboard(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cluster(f"ray: {{dashboard: {value}}}\n{NODES}", "c.yaml")


def test_plain_http_dashboard_beyond_loopback_warns() -> None:
    remote = parse_cluster(f"ray: {{dashboard: '10.0.0.1:8265'}}\n{NODES}", "c.yaml")
    assert any("plain HTTP beyond loopback" in w for w in remote.warnings())
    for quiet in ("'127.0.0.1:8265'", "'https://10.0.0.1:8443'"):
        spec = parse_cluster(f"ray: {{dashboard: {quiet}}}\n{NODES}", "c.yaml")
        assert not any("ray.dashboard" in w for w in spec.warnings())


@pytest.mark.parametrize("value", ["/srv/ktc", "~/ktc", "~ray/searches", "/"])
def test_storage_accepts_absolute_and_home_paths(value: str) -> None:
    spec = parse_cluster(f"storage: '{value}'\n{NODES}", "c.yaml")
    assert spec.storage == value
    assert spec.chief_paths == (("storage", value),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("searches", r"storage: expected an absolute path on the head .*got 'searches'"),
        ("'./s'", r"got '\./s'"),
        ("''", r"storage: expected an absolute path on the head .*got an empty string"),
        ("'/a\\0b'", r"storage: expected a path on the head for storage, got text with a NUL"),
        ("'/" + "x" * 5000 + "'", r"at most 4096 characters for storage, got 5001"),
    ],
)
def test_bad_storage(value: str, message: str) -> None:
    text = f'storage: "{value[1:-1]}"' if value.startswith("'/a") else f"storage: {value}"
    with pytest.raises(ConfigError, match=message):
        parse_cluster(f"{text}\n{NODES}", "c.yaml")


@pytest.mark.parametrize(
    ("storage", "shared", "relation"),
    [
        ("/mnt/s", "/mnt/s/", "is the same folder as"),
        ("/mnt/s/searches", "/mnt/s", "lies inside"),
        ("/mnt", "/mnt/s/scratch", "contains"),
    ],
)
def test_storage_and_shared_path_must_not_overlap(storage: str, shared: str, relation: str) -> None:
    with pytest.raises(ConfigError, match=rf"storage: '{storage}' {relation} shared_path"):
        parse_cluster(f"storage: {storage}\nshared_path: {shared}\n{NODES}", "c.yaml")
    siblings = parse_cluster(
        f"storage: /mnt/searches\nshared_path: /mnt/searches-scratch\n{NODES}", "c.yaml"
    )
    assert siblings.storage == "/mnt/searches"


def test_chief_paths_name_the_tls_files_and_storage(tmp_path: Path) -> None:
    for name in ("s.pem", "s.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "chief: {tls: {cert: s.pem, key: s.key, ca: ca.pem}}\nstorage: /srv/ktc\n" + NODES
    )
    from orchestrator.config import load_cluster

    spec = load_cluster(cluster)
    assert spec.chief_paths == (
        ("chief.tls.cert", str(tmp_path / "s.pem")),
        ("chief.tls.key", str(tmp_path / "s.key")),
        ("chief.tls.ca", str(tmp_path / "ca.pem")),
        ("storage", "/srv/ktc"),
    )


# --- the storage root, on the head ------------------------------------------------


def test_storage_root_is_created_private_with_its_parents(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        root = ensure_storage_root(str(tmp_path / "a" / "b" / "searches"))
    finally:
        os.umask(previous)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", root):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert ensure_storage_root(str(root)) == root  # an existing root is fine


def test_storage_root_expands_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage_root("~/ktc") == tmp_path / "ktc"


def test_storage_root_refuses_a_file_and_an_open_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file; expected a folder"):
        ensure_storage_root(str(tmp_path / "f"))
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ConfigError, match=r"writable by every user and lacks the sticky bit"):
        ensure_storage_root(str(open_dir))
    open_dir.chmod(0o1777)  # like /tmp: others cannot rename our entries
    assert ensure_storage_root(str(open_dir)) == open_dir


def test_python_m_orchestrator_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.storage import main

    assert main([str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 's'}\n"
    (tmp_path / "f").write_text("x")
    assert main([str(tmp_path / "f")]) == 2
    assert "is a file; expected a folder" in capsys.readouterr().err
    assert main([]) == 2
