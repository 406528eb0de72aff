"""The import graph of the project's packages: no loop, and the layers point one way.

The graph is read from the source with `ast` (nothing is imported): every ``import``
and ``from ... import`` statement counts, also those inside functions and under
``if TYPE_CHECKING:``, since an import moved into a function to dodge a loop is
still a loop. ``from a.b import c`` is an edge to the module ``a.b.c`` when there is
one, else to ``a.b``. Importing ``a.b`` runs ``a/__init__.py`` too, but that is not
drawn as an edge (every submodule would otherwise form a loop with its package).
Imports by name at run time (``importlib.import_module("...")``) are not seen, except
app/cli.py's: each subcommand's module is named in its ``_Stage(...)`` and loaded by
name when the parser is built, so those names are edges of app.cli too
(`named_stage_modules`).

Layers: app -> pretrain, export -> zoo. zoo imports none of the others; pretrain
and export never import each other; nothing imports app but app.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "pretrain", "export", "app")

# What each package may import (besides itself).
ALLOWED = {"zoo": set(), "pretrain": {"zoo"}, "export": {"zoo"}, "app": {"zoo", "pretrain", "export"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` names, or the nearest project package above it; None outside the project."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package `level - 1` steps above this one
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = ".".join(filter(None, (base, node.module)))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else _resolve(base, modules))
    found.discard(None)
    found.discard(module)
    return found  # type: ignore[return-value]


def named_stage_modules(path: Path = ROOT / "app" / "cli.py") -> dict[str, tuple[str, ...]]:
    """{module: (its add_*, run_* function names)} of every ``_Stage(name, help, module, add, run)`` in app/cli.py."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_Stage":
            module, add, run = (a.value for a in node.args[2:5])
            found.setdefault(module, ())
            found[module] += (add, run)
    return found


@functools.cache
def import_graph() -> dict[str, frozenset[str]]:
    """{module: the project modules it imports}, read once per session (parsing is most of this test's time)."""
    modules = project_modules()
    graph = {name: set(imports_of(name, path, modules)) for name, path in modules.items()}
    graph["app.cli"] |= set(named_stage_modules())
    return {name: frozenset(targets) for name, targets in graph.items()}


def find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    """One loop of `graph` as [a, b, ..., a], or None (depth-first search without recursion)."""
    state: dict[str, str] = {}  # "open": on the current path; "done": every path from it explored
    for start in sorted(graph):
        if start in state:
            continue
        path, pending = [start], [iter(sorted(graph[start]))]
        state[start] = "open"
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = "done"
                pending.pop()
            elif state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = "open"
                path.append(nxt)
                pending.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_loop():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import loop: {' -> '.join(cycle)}"


def test_the_loop_finder_finds_a_loop():
    """The check itself: a loop three modules long is found, a graph with none passes."""
    assert find_cycle({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": frozenset({"b", "c"}), "b": frozenset({"c"}), "c": frozenset()}) is None


def test_layers_point_one_way():
    wrong = sorted(f"{importer} imports {imported}" for importer, targets in import_graph().items()
                   for imported in targets
                   if (a := importer.split(".")[0]) != (b := imported.split(".")[0]) and b not in ALLOWED[a])
    assert not wrong, "imports against the layering (app -> pretrain, export -> zoo):\n" + "\n".join(wrong)


def test_the_graph_sees_imports_inside_functions_and_from_imports():
    """The reader itself: a function-level import and `from package import module` are both edges."""
    graph = import_graph()
    assert "zoo.card" in graph["zoo.publish"]  # from zoo import card
    assert "zoo.datasets" in graph["zoo.public"]  # inside public_path
    assert {"zoo", "pretrain", "export", "app"} <= set(graph)


def test_the_subcommands_modules_are_edges_and_define_what_app_cli_names():
    """app/cli.py's lazy, by-name imports: in the graph above (so a loop or a wrong layer through them is found),
    and each names a module of the project that defines the functions app/cli.py calls."""
    named = named_stage_modules()
    assert {"pretrain.cli", "export.cli", "zoo.cli", "app.pipeline", "app.zoo.cli", "app.demo.cli",
            "app.embed"} <= set(named)
    assert set(named) <= import_graph()["app.cli"]
    modules = project_modules()
    for module, functions in named.items():
        assert module in modules, f"app/cli.py names {module}, which is not a module of the project"
        defined = {n.name for n in ast.parse(modules[module].read_text()).body if isinstance(n, ast.FunctionDef)}
        assert set(functions) <= defined, f"{module} lacks {sorted(set(functions) - defined)}"
