"""The package's import graph: no cycles (module-level or inside functions), and Kyutai's `moshi` (the test-only
oracle) imported by no module of the package; then every module imports in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "openmoshi"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(package modules imported anywhere in the file, top-level names of every import)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    edges, roots = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import module`
        for t in targets:
            roots.add(t.split(".")[0])
            # the module itself, else the closest package above it that is a module of ours
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                edges.add(t)
    return edges, roots


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = _modules()
    known = set(mods)
    graph, roots = {}, {}
    for name, path in mods.items():
        graph[name], roots[name] = _imports(name, path, known)
    # a package's __init__ runs before its modules: importing `a.b` imports `a`; not an edge to count here
    return graph, roots


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph, _ = _graph()
    assert "openmoshi.commands.chat" in graph and "openmoshi.checkpoint" in graph
    # Packages' __init__ modules are docstrings only: edges to them are the parent import, not a dependency.
    plain = {n: {m for m in deps if not (_modules()[m].name == "__init__.py")} for n, deps in graph.items()}
    assert _cycles(plain) == []


def test_moshi_is_imported_only_by_tests_and_bench():
    _, roots = _graph()
    offenders = sorted(n for n, r in roots.items() if "moshi" in r)
    assert offenders == []


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\nprint(len(sys.argv) - 1)"
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=300,
                         cwd=str(PACKAGE.parent))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(len(names))
