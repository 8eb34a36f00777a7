#!/usr/bin/env python3
"""The import graph of backend/: no circle, and no package importing from one above it.

The packages, lowest first (backend/__init__.py says what each holds). A module may import from its own package and
from those listed before it; launcher and server are on one level and import nothing of each other. Function-level
imports count too: a late import is still a dependency. Exits 1 and names every offending import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LEVELS = {"core": 0, "imaging": 1, "text": 2, "model": 3, "cluster": 4, "server": 5, "launcher": 5, "cli": 6}
ROOT = Path(__file__).resolve().parent.parent / "backend"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) for every import from backend in the file, relative ones resolved; a name imported from a
    module is given as module.name, which `check` shortens to the module."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == root.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root.name:
                continue
            # `from backend.model import engine` imports the module backend.model.engine where there is one
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def check(root: Path = ROOT) -> list[str]:
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        own = mod.split(".")[1] if mod.count(".") >= 1 else None
        for line, target in imports_of(path, root):
            while target not in modules and "." in target:  # `from backend.x.y import name`: the module is x.y
                target = target.rpartition(".")[0]
            if target not in modules or target == root.name:
                continue
            graph[mod].add(target)
            other = target.split(".")[1] if target.count(".") >= 1 else None
            if own in LEVELS and other in LEVELS and other != own and LEVELS[other] >= LEVELS[own]:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {own} imports {target} ({other} is not below {own})")
            if own in LEVELS and other is not None and other not in LEVELS and target.count(".") >= 2:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {target} is in no known package")
        if own is not None and own not in LEVELS and path.parent != root:
            problems.append(f"{path.relative_to(root.parent)}: package {own!r} is not in LEVELS")
    problems += [f"import circle: {' → '.join(c)}" for c in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), each as a path that closes on itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [group + [group[0]] for group in groups]


def main() -> int:
    problems = check()
    for p in problems:
        print(p)
    if not problems:
        print(f"backend/: {len(list(ROOT.rglob('*.py')))} modules, no import circle, every import goes down")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
