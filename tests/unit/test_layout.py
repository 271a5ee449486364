"""The layout keeps its promises: small modules and classes, no design references outside the repository."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ugcwatchd"
MODULE_LINES = 400
CLASS_LINES = 250


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "sandbox" not in p.relative_to(PACKAGE).parts)


def test_layout_no_module_outside_the_sandbox_is_above_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert long == {}


def test_layout_no_class_outside_the_sandbox_is_above_250_lines() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno and node.end_lineno - node.lineno + 1 > CLASS_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_layout_code_and_readme_cite_only_the_repository_docs() -> None:
    readme = PACKAGE.parent / "README.md"
    offending = [
        f"{path.name}:{n}"
        for path in [*PACKAGE.rglob("*.py"), readme]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "DESIGN §" in line or "seeds/" in line or "shared/" in line
    ]
    assert offending == []


def test_layout_docs_has_the_four_guides() -> None:
    docs = PACKAGE.parent / "docs"
    for name in ("design.md", "errors.md", "providers.md", "development.md"):
        assert (docs / name).stat().st_size > 1000, name
