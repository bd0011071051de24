"""Every module of the four packages declares its public names in ``__all__``, and nothing imports past it.

Read from the source with ``ast`` (nothing is imported), so a new module is checked as soon as it
exists: it complies by declaring ``__all__`` (a literal list of the names other modules may import;
``[]`` for a package or module that offers none). Names starting with ``_`` are private and not
checked; importing a submodule from its package (``from service.ops import telemetry``) needs no entry.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cds_hooks", "fhir_mappings", "rules", "service")
# Where importers live: the packages themselves, their tests, the benchmarks.
IMPORTERS = (*PACKAGES, "tests", "bench")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in _python_files(*PACKAGES)}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _top_level(statements: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's own statements, including those inside top-level ``if`` and ``try`` blocks."""
    for statement in statements:
        yield statement
        if isinstance(statement, ast.If):
            yield from _top_level(statement.body + statement.orelse)
        elif isinstance(statement, ast.Try):
            blocks = statement.body + statement.orelse + statement.finalbody
            yield from _top_level(blocks + [s for handler in statement.handlers for s in handler.body])


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the module binds at its top level: definitions, assignments and imports."""
    names: set[str] = set()
    for statement in _top_level(tree.body):
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                names.update(node.id for node in ast.walk(target) if isinstance(node, ast.Name))
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
        elif isinstance(statement, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in statement.names)
    return names


def _declared(tree: ast.Module) -> list[str] | None:
    """The literal ``__all__`` of a module, or None when it has none (or not a literal list)."""
    for statement in _top_level(tree.body):
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets = [statement.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = statement.value
            if isinstance(value, ast.List | ast.Tuple) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
            ):
                return [e.value for e in value.elts if isinstance(e, ast.Constant)]
            return None
    return None


@dataclass(frozen=True)
class Import:
    importer: Path
    line: int
    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.importer.relative_to(ROOT)}:{self.line} imports {self.name} from {self.module}"


def _imports() -> Iterator[Import]:
    """Every ``from <one of our modules> import <name>``, anywhere in the packages, tests and benchmarks."""
    modules = _modules()
    for path in _python_files(*IMPORTERS):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                for alias in node.names:
                    yield Import(path, node.lineno, node.module, alias.name)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_declares_its_public_names(module: str) -> None:
    """``__all__`` is a literal list of names the module binds, each once."""
    tree = _tree(_modules()[module])
    declared = _declared(tree)
    assert declared is not None, f"{module} has no literal __all__"
    assert len(declared) == len(set(declared)), f"{module}.__all__ names something twice"
    missing = sorted(set(declared) - _bound_names(tree))
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_nothing_imports_a_name_a_module_does_not_declare() -> None:
    """A public name another module imports is in its module's ``__all__`` (submodules and
    ``_private`` names aside; no star imports of our modules)."""
    modules = _modules()
    wrong = []
    for found in _imports():
        if found.name.startswith("_") or f"{found.module}.{found.name}" in modules:
            continue
        declared = _declared(_tree(modules[found.module])) or []
        if found.name == "*" or found.name not in declared:
            wrong.append(str(found))
    assert not wrong, "imported past __all__:\n" + "\n".join(wrong)
