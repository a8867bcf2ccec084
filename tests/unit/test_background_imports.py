"""BackgroundImports: imports wait for their gate, and errors reach the caller."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.background_imports import BackgroundImports


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("ktc_bg_")]:
        del sys.modules[name]


def test_imports_start_only_once_the_gate_opens(module_dir: Path) -> None:
    (module_dir / "ktc_bg_ok.py").write_text("VALUE = 42\n")
    gate = threading.Event()
    imports = BackgroundImports(["ktc_bg_ok"], after=gate).start()

    with pytest.raises(TimeoutError, match="ktc_bg_ok still running after 0.2 s"):
        imports.wait(0.2)
    assert "ktc_bg_ok" not in sys.modules  # nothing imported before the gate

    gate.set()
    imports.wait(30)
    assert sys.modules["ktc_bg_ok"].VALUE == 42


def test_an_import_error_is_raised_by_wait(module_dir: Path) -> None:
    (module_dir / "ktc_bg_broken.py").write_text("raise RuntimeError('broken on import')\n")
    imports = BackgroundImports(["ktc_bg_broken"]).start()
    with pytest.raises(RuntimeError, match="broken on import"):
        imports.wait(30)


def test_a_missing_module_is_raised_by_wait(module_dir: Path) -> None:
    imports = BackgroundImports(["ktc_bg_nosuch"]).start()
    with pytest.raises(ModuleNotFoundError, match="ktc_bg_nosuch"):
        imports.wait(30)
