"""The engine is pure: it imports the standard library, pydantic, jsonschema, Jinja2 and PyYAML only.

PyYAML is a parser like jsonschema is a validator: the source map and the diff need its marks and
its dumper, and it brings no framework with it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "apps" / "engine"
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core", "jsonschema", "jinja2", "yaml"}


def imported_modules(source: str) -> list[str]:
    """Absolute names of every module ``source`` imports; relative imports are resolved within the engine."""
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:  # ".x" stays in apps.engine
                modules.append(".".join(["apps.engine", *([node.module] if node.module else [])]))
            else:  # "..x" leaves it, and stays relative so it never looks allowed
                modules.append("." * node.level + (node.module or ""))
    return modules


def forbidden_imports(source: str) -> list[str]:
    """Imports that break the engine's purity: anything but the standard library, the allowed
    third-party packages and apps.engine itself."""
    bad = []
    for module in imported_modules(source):
        top = module.split(".")[0]
        if module == "apps.engine" or module.startswith("apps.engine."):
            continue
        if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
            continue
        bad.append(module)
    return bad


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_engine_module_imports_nothing_impure(path: Path) -> None:
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("import django", id="django"),
        pytest.param("from django.db import models", id="django-from"),
        pytest.param("import celery.app", id="celery"),
        pytest.param("from apps.runs.models import Run", id="another-app"),
        pytest.param("from apps.providers import registry", id="providers"),
        pytest.param("from .. import workflows", id="relative-escape"),
        pytest.param("from ..runs import services", id="relative-escape-module"),
        pytest.param("def f():\n    import requests", id="import-inside-a-function"),
    ],
)
def test_the_purity_check_catches_a_violation(source: str) -> None:
    assert forbidden_imports(source) != []


def test_the_purity_check_allows_what_the_engine_needs() -> None:
    source = "import json\nfrom . import graph\nfrom .spec import WorkflowSpec\nfrom jinja2 import nodes\nfrom pydantic import BaseModel\nimport jsonschema"

    assert forbidden_imports(source) == []


def test_import_linter_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.fail(f"lint-imports is not installed next to {sys.executable}")

    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "The engine is pure" in result.stdout
    assert "KEPT" in result.stdout
