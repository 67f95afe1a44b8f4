"""The packages' import direction: `tiny_agent` (the embedded model and its training) builds
on `beam_pipelines` and `tools`, never the reverse, so the pipeline and the tools can be
installed and run without the model's training code."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(source: str) -> set[str]:
    """Every absolute module name an `import` or `from ... import` statement names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_imported_modules_sees_nested_and_from_imports():
    source = "import os.path\ndef f():\n    from tiny_agent import task\n    from . import x\n"
    assert imported_modules(source) == {"os.path", "tiny_agent"}


@pytest.mark.parametrize("package", ["beam_pipelines", "tools"])
def test_package_never_imports_tiny_agent(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in sorted(imported_modules(path.read_text()))
        if name == "tiny_agent" or name.startswith("tiny_agent.")
    ]
    assert offenders == []
