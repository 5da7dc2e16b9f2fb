"""The project's floors, its import graph, and the size figures of its code.

Each module sits on a floor; a module may import from its own floor or below, never above, and
the graph (top-level *and* function-local imports, read with ``ast``) has no cycle.
``tests/test_layers.py`` enforces both; ``python tests/layering.py`` prints the figures
(files over 400/600/1,000 lines, the largest file, the longest function, climbing edges, cycles,
the share of function-local imports, the training spine's length).
"""
from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("models", "utils", "tools")

# Module prefix -> floor. The longest matching prefix wins. Floors, bottom up:
#   1 errors; 2 models, config, data; 3 training parts; 4 add-ons and the doctor;
#   5 the spine; 6 optional tools (leaves nothing below imports); 7 command-line tools.
FLOORS = {
    "utils.errors": 1,
    "utils": 1,  # the package's empty __init__
    "models": 2,
    "utils.config": 2,
    "utils.data": 2,
    "utils.schedules": 2,
    "utils.training": 3,
    "utils.addons": 4,
    "utils.doctor": 4,
    "utils.build": 5,
    "utils.trainer": 5,
    "utils.runs": 5,
    "utils.rundir": 5,
    "utils.checks": 6,
    "utils.studies": 6,
    "utils.visual": 6,
    "utils.deploy": 6,
    "utils.tune": 6,
    "tools": 7,
}


def floor_of(module: str, floors: dict[str, int] = FLOORS) -> int | None:
    """The floor of ``module`` by its longest matching prefix, or None when no prefix matches."""
    best = None
    for prefix, floor in floors.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, floor)
    return best[1] if best else None


@dataclass
class Edge:
    src: str
    dst: str
    line: int
    local: bool  # written inside a function


def module_files(root: str = ROOT) -> dict[str, str]:
    """Module name -> file path for every ``.py`` under the project packages."""
    out = {}
    for pkg in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(root, pkg)):
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
    return out


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The project module ``name`` refers to (``a.b.c`` may be module ``a.b`` + attribute ``c``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(root: str = ROOT) -> list[Edge]:
    """Every project-internal import, with whether it sits inside a function."""
    modules = module_files(root)
    edges = []
    for mod, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_pkg = path.endswith("__init__.py")
        local_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local_nodes.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for dst in dict.fromkeys(_resolve(t, modules) for t in targets):  # one edge per statement and module
                if dst and dst != mod:
                    edges.append(Edge(mod, dst, node.lineno, id(node) in local_nodes))
    return edges


def climbing(edges: list[Edge], floors: dict[str, int] = FLOORS) -> list[Edge]:
    """Edges from a lower floor to a higher one (and edges touching a module with no floor)."""
    bad = []
    for e in edges:
        a, b = floor_of(e.src, floors), floor_of(e.dst, floors)
        if a is None or b is None or b > a:
            bad.append(e)
    return bad


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def functions(root: str = ROOT) -> list[tuple[int, str]]:
    """(lines, 'module:function') of every function and method in the project packages."""
    out = []
    for mod, path in module_files(root).items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{mod}:{node.name}"))
    return sorted(out, reverse=True)


def figures(root: str = ROOT, floors: dict[str, int] = FLOORS, spine: tuple[str, ...] = ("utils.trainer",)) -> dict:
    """The size and structure figures of the project's code."""
    files = module_files(root)
    lines = {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            lines[mod] = sum(1 for _ in f)
    edges = import_edges(root)
    funcs = functions(root)
    spine_funcs = sorted(((n, name) for n, name in funcs if name.split(":")[0] in spine), reverse=True)
    return {
        "modules": len(files),
        "lines": sum(lines.values()),
        "over_400": sum(n > 400 for n in lines.values()),
        "over_600": sum(n > 600 for n in lines.values()),
        "over_1000": sum(n > 1000 for n in lines.values()),
        "largest": max((n, m) for m, n in lines.items()),
        "longest_function": funcs[0],
        "internal_imports": len(edges),
        "function_local_imports": sum(e.local for e in edges),
        "climbing_edges": len(climbing(edges, floors)),
        "cycles": cycles(edges),
        "spine_functions": spine_funcs[:3],
    }


def main() -> None:
    f = figures()
    print(f"modules {f['modules']}, lines {f['lines']}")
    print(f"files over 400 / 600 / 1000 lines: {f['over_400']} / {f['over_600']} / {f['over_1000']}")
    print(f"largest file: {f['largest'][1]} ({f['largest'][0]} lines)")
    print(f"longest function: {f['longest_function'][1]} ({f['longest_function'][0]} lines)")
    share = f["function_local_imports"] / max(1, f["internal_imports"])
    print(f"internal imports {f['internal_imports']}, function-local {f['function_local_imports']} ({share:.0%})")
    print(f"imports that climb a floor: {f['climbing_edges']}")
    print(f"cycles: {len(f['cycles'])} {f['cycles']}")
    print("longest spine functions: " + ", ".join(f"{name} {n}" for n, name in f["spine_functions"]))


if __name__ == "__main__":
    main()
