"""What `pip install .` (and so the image) carries: the operator, not the development harness."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import flagops

ROOT = Path(__file__).resolve().parents[2]


def test_the_operator_package_has_no_harness_and_needs_no_cryptography() -> None:
    package = Path(flagops.__file__).parent
    assert not (package / "devcluster.py").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    extras = " ".join(dep for deps in project["optional-dependencies"].values() for dep in deps)
    assert "cryptography" not in runtime + extras
    required = importlib.metadata.requires("flagops") or []
    assert not [r for r in required if r.startswith("cryptography")]


def test_the_package_installs_the_kubectl_plugin() -> None:
    """kubectl finds plugins as `kubectl-NAME` executables on PATH: the console script is that."""
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["kubectl-flagops"] == "flagops.plugin.main:main"
    assert scripts["flagops"] == "flagops.cli:main"
