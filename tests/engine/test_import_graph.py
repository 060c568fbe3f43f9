"""The import graph of pyllama/ and asgi/, read with the stdlib `ast`: no cycles, and the
engine never imports the server.

Every import counts, including those inside functions and under TYPE_CHECKING: a cycle
held apart by a function-local import is still a cycle for a reader.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pyllama", "asgi")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from a import b` counts a.b when b is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        for t in targets:
            while t and t not in known:  # `import a.b.c` of a non-module c: its nearest module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]], within: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among modules under `within`."""
    nodes = [n for n in g if n == within or n.startswith(within + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def package_edges(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges from a package's __init__ to its own submodules (re-exports),
    which Python resolves without a cycle."""
    return {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in g.items()}


def test_the_graph_is_read() -> None:
    g = graph()
    assert "pyllama.models.llama" in g and "pyllama.kernels" in g["pyllama.engine"]
    assert "asgi" in g


def test_the_cycle_finder_finds_cycles() -> None:
    g = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(g, "p") == [["p.a", "p.b", "p.c"]]


def test_no_import_cycles_in_pyllama() -> None:
    found = cycles(package_edges(graph()), "pyllama")
    assert not found, f"import cycles among pyllama modules: {found}"


def test_pyllama_never_imports_asgi() -> None:
    bad = sorted(f"{n} -> {t}" for n, ts in graph().items() if n.startswith("pyllama") for t in ts
                 if t == "asgi" or t.startswith("asgi."))
    assert not bad, f"the engine imports the server: {bad}"


def test_no_import_cycles_in_asgi() -> None:
    found = cycles(package_edges(graph()), "asgi")
    assert not found, f"import cycles among asgi modules: {found}"


def test_routes_do_not_import_each_other() -> None:
    """Shared request handling lives in asgi/*_request.py, not in another route's module."""
    bad = sorted(f"{n} -> {t}" for n, ts in graph().items() if n.startswith("asgi.routes.")
                 for t in ts if t.startswith("asgi.routes.") and t != n)
    assert not bad, f"routes import each other: {bad}"


def test_no_route_imports_the_app_module() -> None:
    bad = sorted(n for n, ts in graph().items() if n.startswith("asgi.routes") and "asgi.app" in ts)
    assert not bad, f"routes import asgi.app (server state lives in asgi.state): {bad}"
