"""The layer contracts of pyproject.toml (``[tool.importlinter]``), checked by import-linter.

Layers import downward only (errors/_fs -> ranking -> data -> evaluation -> training ->
models -> experiment | serving -> cli), and no two modules or sibling packages import each
other, at any depth. A function-level import counts like any other.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("import-linter is a dev dependency: `pip install -e .[dev]` installs it")
    return exe


def test_layer_contracts_are_kept():
    proc = subprocess.run([_lint_imports(), "--config", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_contracts_catch_an_upward_import(tmp_path):
    """The contracts are live: a copy of the package whose data layer imports the serving
    layer breaks them (guards against a config that checks nothing)."""
    pkg = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "recforge", pkg / "recforge",
                    ignore=shutil.ignore_patterns("__pycache__", "static"))
    with open(pkg / "recforge" / "data" / "filters.py", "a") as fh:
        fh.write("\nimport recforge.serving  # noqa: E402,F401\n")
    env_path = str(pkg)
    proc = subprocess.run([_lint_imports(), "--config", str(ROOT / "pyproject.toml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "recforge.data.filters -> recforge.serving" in proc.stdout, proc.stdout[-4000:]
