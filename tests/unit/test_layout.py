"""The import path is the folder path: every ``cohortflow.x.y`` module is ``tasks/cohortflow/x/y.py``, so a reader,
an editor or an import-graph tool finds each import's file without being told about the install."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "tasks"


def _module_file(module: str) -> Path | None:
    base = SOURCE_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _static_edges() -> set[tuple[str, str]]:
    """(importer, imported) for every import of a cohortflow module, read from the source tree alone."""
    edges = set()
    for path in sorted(SOURCE_ROOT.joinpath("cohortflow").rglob("*.py")):
        importer = _module_name(path)
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # ``from pkg import name`` imports the submodule pkg.name when there is one
                targets = [f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base for a in node.names]
            else:
                continue
            for target in targets:
                if target == "cohortflow" or target.startswith("cohortflow."):
                    edges.add((importer, target))
    return edges


def test_every_import_of_the_package_names_a_file_in_the_source_tree():
    edges = _static_edges()
    assert len(edges) > 100, "the source tree's imports were not read"
    unresolved = sorted(f"{a} imports {b}" for a, b in edges if _module_file(b) is None)
    assert not unresolved, unresolved


def test_an_import_graph_tool_resolves_the_installed_package_to_the_same_files():
    graph = grimp.build_graph("cohortflow", cache_dir=None)
    on_disk = {_module_name(p) for p in SOURCE_ROOT.joinpath("cohortflow").rglob("*.py")}
    assert set(graph.modules) == on_disk
    tool_edges = {(m, i) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)}
    assert tool_edges == _static_edges()


@pytest.mark.parametrize("name", ["cohortflow.example.yml"])
def test_the_example_config_lives_at_the_project_root(name):
    # A project started from it keeps landing/ and target/ beside it, outside the package source.
    root_file = SOURCE_ROOT.parent / name
    assert root_file.is_file() and not root_file.is_symlink()
