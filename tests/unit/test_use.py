"""``ktc use`` and ``orchestrator.config.user_settings`` (issue 16): the remembered
cluster file, XDG_CONFIG_HOME, modes 0700/0600, show, clear, stale and broken records."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from orchestrator.cli.main import main
from orchestrator.config.user_settings import (
    choice_file,
    cluster_file_for,
    read_choice,
    remembered_cluster,
    settings_dir,
)
from orchestrator.errors import ConfigError

CLUSTER = "kind: cluster\nname: lab\nnodes:\n  - {name: a, cpus: 2}\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with no XDG_CONFIG_HOME, and a cluster file in a project folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    (tmp_path / "home").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "lab.yaml").write_text(CLUSTER)
    monkeypatch.chdir(project)
    return tmp_path / "home"


def _env() -> dict[str, str]:
    return dict(os.environ)


def test_settings_dir_honours_xdg_config_home(tmp_path: Path) -> None:
    assert settings_dir({"HOME": "/h"}) == Path("/h/.config/ktcluster")
    assert settings_dir({"HOME": "/h", "XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "ktcluster"
    # The XDG spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    assert settings_dir({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path("/h/.config/ktcluster")


def test_use_remembers_the_absolute_path_privately(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.umask(old := os.umask(0o022))
    try:
        assert main(["use", "lab.yaml"]) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    target = home / ".config" / "ktcluster" / "cluster.json"
    assert (
        f"using cluster 'lab' ({Path.cwd() / 'lab.yaml'}) from now on: ray local, dashboard "
        "none (ray.dashboard is not set)." in out
    )
    assert str(target) in out
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    data = json.loads(target.read_text())
    assert data["path"] == str(Path.cwd() / "lab.yaml") and data["name"] == "lab"
    assert [p.name for p in target.parent.iterdir()] == ["cluster.json"]  # no temp file left

    # Shown from anywhere, and used by later verbs unless --cluster says otherwise.
    os.chdir(home)
    assert main(["use"]) == 0
    assert capsys.readouterr().out == (
        f"cluster 'lab': {Path(data['path'])}\n"
        "  ray local, dashboard none (ray.dashboard is not set)\n"
    )
    assert cluster_file_for(None, _env()) == data["path"]
    assert cluster_file_for("other.yaml", _env()) == "other.yaml"


def test_use_with_xdg_config_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["use", "lab.yaml"]) == 0
    assert (tmp_path / "xdg" / "ktcluster" / "cluster.json").is_file()
    assert not (home / ".config").exists()


def test_an_existing_settings_dir_is_tightened(home: Path) -> None:
    folder = home / ".config" / "ktcluster"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    assert main(["use", "lab.yaml"]) == 0
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_an_invalid_file_is_refused_and_nothing_is_remembered(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("bad.yaml").write_text("nodes:\n  - {name: a, cpus: 0}\n")
    assert main(["use", "bad.yaml"]) == 2
    assert "bad.yaml:2: nodes[0].cpus: expected a number at least 1" in capsys.readouterr().err
    assert read_choice(_env()) is None
    Path("search.yaml").write_text("hypermodel: sleep\n")
    assert main(["use", "search.yaml"]) == 2
    assert "a cluster file was expected here" in capsys.readouterr().err
    assert main(["use", "missing.yaml"]) == 2
    assert read_choice(_env()) is None


def test_use_without_a_choice_and_clear(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["use"]) == 0
    assert "no cluster file is remembered" in capsys.readouterr().out
    assert main(["use", "--clear"]) == 0
    assert "nothing to forget" in capsys.readouterr().out
    assert main(["use", "lab.yaml"]) == 0
    capsys.readouterr()
    assert main(["use", "--clear"]) == 0
    assert "forgot cluster 'lab'" in capsys.readouterr().out
    assert not choice_file(_env()).exists()
    assert cluster_file_for(None, _env()) is None
    assert main(["use", "lab.yaml", "--clear"]) == 2
    assert "expected either CLUSTER.yaml or --clear, got both" in capsys.readouterr().err


def test_the_file_is_read_again_each_time(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["use", "lab.yaml"]) == 0
    Path("lab.yaml").write_text(CLUSTER.replace("name: lab", "name: lab2"))
    current = remembered_cluster(_env())
    assert current is not None and current.changed and current.spec.name == "lab2"
    capsys.readouterr()
    assert main(["use"]) == 0
    assert "the file changed since `ktc use`" in capsys.readouterr().out

    Path("lab.yaml").write_text("nodes:\n  - {name: a, cpus: -1}\n")
    with pytest.raises(ConfigError, match=r"lab\.yaml:2: nodes\[0\]\.cpus"):
        remembered_cluster(_env())

    Path("lab.yaml").unlink()
    with pytest.raises(
        ConfigError,
        match=r"the cluster file remembered by `ktc use`, .*lab\.yaml, no longer exists.*"
        r"Run `ktc use CLUSTER\.yaml` with its new path, or `ktc use --clear`",
    ):
        remembered_cluster(_env())
    assert main(["use"]) == 2


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"version": 99}', '{"version": 1, "path": "/x"}']
)
def test_a_broken_record_says_how_to_recover(home: Path, text: str) -> None:
    target = choice_file(_env())
    target.parent.mkdir(parents=True)
    target.write_text(text)
    with pytest.raises(ConfigError, match=r"the record of `ktc use` is unreadable.*--clear"):
        read_choice(_env())
    assert main(["use", "--clear"]) == 0
    assert not target.exists()


def test_a_relative_path_in_the_record_is_refused(home: Path) -> None:
    target = choice_file(_env())
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps({"version": 1, "path": "lab.yaml", "name": "x", "sha256": ""}))
    with pytest.raises(ConfigError, match=r"is not an absolute path"):
        read_choice(_env())


def test_use_prints_the_files_warnings(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("remote.yaml").write_text(
        "ray: {address: '10.0.0.1:6379', dashboard: '10.0.0.1:8265'}\n"
        "nodes:\n  - {name: a, cpus: 2}\n"
    )
    assert main(["use", "remote.yaml"]) == 0
    out, err = capsys.readouterr()
    assert "ray 10.0.0.1:6379, dashboard http://10.0.0.1:8265." in out
    assert "warning: " in err and "plain HTTP beyond loopback" in err
