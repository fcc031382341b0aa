"""The documentation site builds under ``mkdocs build --strict`` (``make docs``).

The API reference (docs/api/) is generated from the docstrings by mkdocstrings, which reads
the source statically (griffe; recforge is not imported). --strict turns every warning into
an error: a broken link between pages, an unresolved ``[name][]`` cross-reference, a page
missing from the nav, a docstring parameter that is not in the signature.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs and mkdocstrings[python] are not installed "
           "(`pip install -e .[docs]`; the dev extra includes them)")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # No --quiet: it raises the log level above WARNING, and mkdocs 1.6 then counts no
    # warnings, so --strict --quiet passes a broken reference.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_docs_build_strict(tmp_path):
    proc = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    api = tmp_path / "site" / "api"
    # The reference is really generated: the docstrings of the public surface are in it.
    models = (api / "models" / "index.html").read_text()
    assert "recforge.models.base.Recommender" in models
    assert "recforge.models.registry.create_model" in models
    assert "recforge.data.interactions.Interactions" in (api / "data" / "index.html").read_text()
    assert "recforge.serving.app.create_app" in (api / "serving" / "index.html").read_text()
    # The docstrings' Sphinx roles are rendered (docs/griffe_sphinx_roles.py), not shown raw.
    for page in api.rglob("*.html"):
        assert ":class:" not in page.read_text() and ":meth:" not in page.read_text(), page


def test_strict_build_catches_broken_references(tmp_path):
    """The check is live: a copy of the docs with a reference to a name that does not exist
    and a link to a page that does not exist fails the build, naming both."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with open(docs / "api" / "index.md", "a") as fh:
        fh.write("\nSee [`recforge.no_such_function`][] and [the guide](no-such-page.md).\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["plugins"][-1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT / "src")]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert "recforge.no_such_function" in out
    assert "no-such-page.md" in out
