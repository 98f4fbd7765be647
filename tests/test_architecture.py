"""The package's import graph, read from its source with ``ast`` (nothing is imported): no import cycle, no private
name imported from another module, and the layer rule of ``docs/architecture.md``:

    core <- executors <- experiment <- benchmark <- tune;  audit beside benchmark (never importing it or tune)

``python tests/test_architecture.py [PACKAGE_DIR]`` prints the numbers (cycles, private imports across modules,
function-local imports, layer violations) of any checkout, e.g. of an older commit.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning_unlearn

PACKAGE = "lightning_unlearn"
ROOT = Path(lightning_unlearn.__file__).resolve().parent  # the package imported (its source is read, not run)

#: Rank of each application layer; everything else in the package is the core (rank 0) and ``cli`` sits on top.
LAYERS = {"executors": 1, "experiment": 2, "benchmark": 3, "audit": 3, "tune": 4, "cli": 5}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` module imports ``target`` module (and ``name`` from it, if any)."""

    source: str
    target: str
    name: str | None
    line: int
    local: bool  # inside a function body
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_names(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package at ``root`` (packages as their ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of the package's own modules in ``path``: a ``from P import n`` names the submodule ``P.n`` when
    there is one, else the module ``P``."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), local, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), local, type_only)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        found.append(Import(module, alias.name, None, child.lineno, local, type_only))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                if base.split(".")[0] != PACKAGE:
                    continue
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        found.append(Import(module, sub, None, child.lineno, local, type_only))
                    else:
                        found.append(Import(module, base, alias.name, child.lineno, local, type_only))
            else:
                visit(child, local, type_only)

    visit(tree, False, False)
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = module_names(root)
    if not modules:
        raise FileNotFoundError(f"no Python module under {root}")
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def cycles(imports: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan) of the graph of every import that runs
    (module level or function-local; ``TYPE_CHECKING`` ones excluded)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only and imp.target != imp.source:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_imports(imports: list[Import]) -> list[Import]:
    """Imports of a private name (``_x``), or of a private module, of another module."""
    out = []
    for imp in imports:
        if imp.target == imp.source:
            continue
        if (imp.name is not None and _private(imp.name)) or any(_private(p) for p in imp.target.split(".")):
            out.append(imp)
    return out


def layer(module: str) -> tuple[str, int]:
    """``(layer name, rank)`` of a module: its top-level subpackage or module if that is an application layer, else
    the core."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "executors_ray":  # the Ray executor's module before executors/ was a package (older checkouts)
        top = "executors"
    if top == "__main__":  # ``python -m lightning_unlearn``: the command line
        top = "cli"
    return (top, LAYERS[top]) if top in LAYERS else ("core", 0)


def layer_violations(imports: list[Import]) -> list[Import]:
    """Imports that go up or sideways between layers: a module may import its own layer and the ones of lower rank;
    audit and benchmark, both rank 3, never import each other."""
    out = []
    for imp in imports:
        (src, rank_s), (dst, rank_t) = layer(imp.source), layer(imp.target)
        if src != dst and rank_t >= rank_s:
            out.append(imp)
    return out


def local_import_statements(imports: list[Import]) -> int:
    """How many import statements of the package's own modules stand inside a function body."""
    return len({(i.source, i.line) for i in imports if i.local})


def summary(root: Path = ROOT) -> dict[str, object]:
    imports = all_imports(root)
    return {
        "modules": len(module_names(root)),
        "cycles": cycles(imports),
        "private_cross_imports": [f"{i.source}:{i.line} {i.target}{'.' + i.name if i.name else ''}"
                                  for i in private_imports(imports)],
        "local_imports": local_import_statements(imports),
        "layer_violations": sorted({f"{i.source}:{i.line} -> {i.target}" for i in layer_violations(imports)}),
    }


# -- the tests -------------------------------------------------------------------------------------------------------
def test_the_whole_package_is_read():
    modules = module_names(ROOT)
    assert {f"{PACKAGE}.benchmark", f"{PACKAGE}.tune", f"{PACKAGE}.audit", f"{PACKAGE}.methods"} <= set(modules)
    assert len(all_imports()) > 300


def test_no_import_cycle():
    found = cycles(all_imports())
    assert not found, f"import cycles (module level or function-local imports): {found}"


def test_no_private_name_imported_across_modules():
    found = [f"{i.source}:{i.line} imports {i.target}{'.' + i.name if i.name else ''}"
             for i in private_imports(all_imports())]
    assert not found, "private names imported from another module (make them public, or move the code):\n" + "\n".join(
        found
    )


def test_layer_rule():
    found = [f"{i.source}:{i.line} ({layer(i.source)[0]}) imports {i.target} ({layer(i.target)[0]})"
             for i in layer_violations(all_imports())]
    rule = "core <- executors <- experiment <- benchmark <- tune, audit beside benchmark"
    assert not found, f"imports against {rule}:\n" + "\n".join(found)


def test_analyser_sees_what_it_must(tmp_path):
    """The checks fail where they must: a cycle through a function-local import, a private name, an upward import."""
    pkg = tmp_path / PACKAGE
    for sub in ("", "benchmark", "tune", "audit", "experiment"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "benchmark" / "a.py").write_text("def f():\n    from lightning_unlearn.tune.b import g\n")
    (pkg / "tune" / "b.py").write_text("from lightning_unlearn.benchmark.a import f\ndef g(): ...\n")
    (pkg / "audit" / "c.py").write_text("from lightning_unlearn.benchmark import a\n")
    (pkg / "experiment" / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lightning_unlearn.tune.b import g\n"
        "from .e import _hidden\n"
    )
    (pkg / "experiment" / "e.py").write_text("_hidden = 1\n")
    (pkg / "experiment" / "_shim.py").write_text("")
    (pkg / "experiment" / "f.py").write_text("from lightning_unlearn.experiment import _shim\n")
    imports = all_imports(pkg)
    assert cycles(imports) == [[f"{PACKAGE}.benchmark.a", f"{PACKAGE}.tune.b"]]
    assert sorted((i.source, i.name or i.target) for i in private_imports(imports)) == [
        (f"{PACKAGE}.experiment.d", "_hidden"), (f"{PACKAGE}.experiment.f", f"{PACKAGE}.experiment._shim")
    ]
    assert sorted(i.source for i in layer_violations(imports)) == [
        f"{PACKAGE}.audit.c", f"{PACKAGE}.benchmark.a", f"{PACKAGE}.experiment.d"
    ]
    assert local_import_statements(imports) == 1


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT), indent=1))
