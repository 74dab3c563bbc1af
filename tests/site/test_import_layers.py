"""The package layers (.importlinter): `lint-imports` passes on the packages as they are, and
fails when a module imports from a package above its own (at module level or inside a
function) or two modules of one package import each other. The failing cases run it on a copy
of the packages with one import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PACKAGES = ("core", "access", "registry", "inference", "jobs", "monitoring", "webhooks", "console", "modelforge_site")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(ROOT / ".importlinter")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "templates", "static")
        )
    return tmp_path


def add_line(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


def test_the_packages_keep_the_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_layers(tree):
    add_line(tree / "registry" / "selectors.py", "from inference.models import Prediction  # noqa: E402, F401")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "registry is not allowed to import inference" in result.stdout
    assert "registry.selectors -> inference.models" in result.stdout


def test_a_function_level_upward_import_breaks_them_too(tree):
    add_line(tree / "core" / "ids.py", "def late():\n    from jobs import services  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "core is not allowed to import jobs" in result.stdout
    assert "core.ids -> jobs.services" in result.stdout


def test_two_modules_of_a_package_importing_each_other_break_the_acyclic_contract(tree):
    add_line(tree / "jobs" / "models.py", "from jobs import services  # noqa: E402, F401")  # services imports models
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "No cycles are allowed in jobs." in result.stdout
