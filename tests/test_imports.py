"""The package's imports point one way and form no cycles (docs/architecture.md).

Every `import nnrun...` in every file counts, lazy ones inside functions included: a lazy import
still ties the importer to the imported module. The layers, top to bottom:

    cli -> sweep/search -> explain/inference/results -> engine -> components
        -> config/registry/rundir -> errors/process/safe_text

A module may import its own layer or a lower one. Within a layer, files and top-level packages
must not import each other in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnrun"

LAYERS = (  # top first
    ("cli", ("nnrun.cli", "nnrun.__main__")),
    ("sweep/search", ("nnrun.sweep", "nnrun.search")),
    ("explain/inference/results", ("nnrun.explain", "nnrun.inference", "nnrun.results")),
    ("engine", ("nnrun.engine",)),
    ("components", ("nnrun.components",)),
    ("config/registry/rundir", ("nnrun.config", "nnrun.registry", "nnrun.rundir")),
    ("errors/process/safe_text", ("nnrun.errors", "nnrun.process", "nnrun.safe_text", "nnrun")),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, imported nnrun module) for every import in the file, lazy ones included. `from
    nnrun.a import b` counts as nnrun.a.b when b is a module, else as nnrun.a."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "nnrun"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "nnrun":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else target))
    return found


def graph(root: Path = PACKAGE) -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return files, {m: imports_of(p, root, set(files)) for m, p in files.items()}


def layer_of(module: str) -> int:
    """Index into LAYERS (0 = top) of the longest matching prefix (`nnrun` itself: only the
    package's __init__)."""
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "nnrun"
            if (module == prefix or inside) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{module} belongs to no layer; add it to LAYERS in tests/test_imports.py")
    return rank


def upward_imports(files, edges, root: Path = PACKAGE) -> list[str]:
    problems = []
    for module, imported in edges.items():
        for line, target in imported:
            if layer_of(target) < layer_of(module):
                problems.append(f"{files[module].relative_to(root.parent)}:{line} imports {target} "
                                f"({LAYERS[layer_of(module)][0]} must not import {LAYERS[layer_of(target)][0]})")
    return problems


def cycles(nodes: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in nodes.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def file_cycles(edges) -> list[list[str]]:
    return cycles({m: {t for _, t in imported if t != m} for m, imported in edges.items()})


def package_of(module: str) -> str:
    """The top-level package (nnrun.engine), or the module itself (nnrun.registry)."""
    return ".".join(module.split(".")[:2])


def package_cycles(edges) -> list[list[str]]:
    nodes: dict[str, set[str]] = {}
    for module, imported in edges.items():
        for _, target in imported:
            a, b = package_of(module), package_of(target)
            if a != b and a != "nnrun" and b != "nnrun":
                nodes.setdefault(a, set()).add(b)
    return cycles(nodes)


def test_imports_point_down_the_layers():
    files, edges = graph()
    problems = upward_imports(files, edges)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_two_files_or_packages_import_each_other():
    _, edges = graph()
    found = file_cycles(edges) + package_cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_module_has_a_layer():
    files, _ = graph()
    for module in files:
        layer_of(module)


# -- the checker itself fails on what it must catch -------------------------------------------

def _tree(tmp_path: Path, sources: dict[str, str]) -> Path:
    root = tmp_path / "nnrun"
    for rel, text in sources.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_names_an_upward_import_even_a_lazy_one(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "engine/__init__.py": "", "results/__init__.py": "", "results/runs.py": "X = 1\n",
        "engine/train.py": "def f():\n    from nnrun.results.runs import X\n    return X\n",
    })
    files, edges = graph(root)
    assert upward_imports(files, edges, root) == ["nnrun/engine/train.py:2 imports nnrun.results.runs "
                        "(engine must not import explain/inference/results)"]


def test_checker_finds_a_cycle_between_two_files_of_one_layer(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "explain/__init__.py": "",
        "explain/base.py": "from nnrun.explain import tokens\n",
        "explain/tokens.py": "def f():\n    from nnrun.explain.base import g\n",
    })
    _, edges = graph(root)
    assert file_cycles(edges) == [["nnrun.explain.base", "nnrun.explain.tokens"]]


def test_checker_finds_a_cycle_between_two_packages(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "", "sweep/__init__.py": "", "search/__init__.py": "",
        "sweep/spec.py": "from nnrun.search.plan import P\n", "search/plan.py": "from nnrun.sweep.spec import S\n",
        "search/other.py": "",
    })
    _, edges = graph(root)
    assert package_cycles(edges) == [["nnrun.search", "nnrun.sweep"]]


@pytest.mark.parametrize("source, expected", [
    ("from . import base\n", "nnrun.explain.base"),
    ("from .base import f\n", "nnrun.explain.base"),
    ("import nnrun.explain.base as b\n", "nnrun.explain.base"),
    ("from nnrun.explain import base\n", "nnrun.explain.base"),
    ("from nnrun.explain import f\n", "nnrun.explain"),
])
def test_checker_reads_every_import_form(tmp_path, source, expected):
    root = _tree(tmp_path, {"__init__.py": "", "explain/__init__.py": "", "explain/base.py": "",
                            "explain/user.py": source})
    _, edges = graph(root)
    assert [t for _, t in edges["nnrun.explain.user"]] == [expected]
