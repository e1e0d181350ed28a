"""The shape of the code: every import in src/ (function-level ones too) follows the rows that
docs/architecture.md draws, there is no circle, and no file or function outgrows the review limits."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "tell"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 600, 60


def layers(doc: str) -> list[list[str]]:
    """The ```layers block of docs/architecture.md: rows top to bottom, rooms side by side split by '|'."""
    block = re.search(r"```layers\n(.*?)```", doc, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    rows = []
    for line in block.group(1).splitlines():
        rooms = re.match(r"^([\w]+(?:\s*\|\s*[\w]+)*)\s{2,}", line + "  ")
        rows.append([r.strip() for r in rooms.group(1).split("|")])
    return rows


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], src: Path = SRC) -> set[str]:
    """The tell modules a file imports anywhere in it (relative imports resolved, names mapped to modules)."""
    me = module_name(path, src)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {m: imports(p, set(files)) for m, p in files.items()}


def room(module: str) -> str:
    """tell.experiments.cell -> experiments; tell.models -> models; tell -> tell."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tell"


def test_the_layers_block_parses_into_the_rooms_of_the_package():
    rows = layers((REPO / "docs" / "architecture.md").read_text())
    named = [r for row in rows for r in row]
    assert len(named) == len(set(named)), "a room is drawn twice"
    actual = {room(m) for m in graph()}
    assert actual == set(named), f"drawn, absent: {set(named) - actual}; present, not drawn: {actual - set(named)}"


def violations(g: dict[str, set[str]], rows: list[list[str]]) -> list[str]:
    level = {r: i for i, row in enumerate(rows) for r in row}  # 0 = top
    bad = []
    for m, deps in sorted(g.items()):
        for d in sorted(deps):
            a, b = room(m), room(d)
            if a != b and level[b] <= level[a]:
                side = "beside it" if level[b] == level[a] else "above it"
                bad.append(f"{m} imports {d} ({b} is {side})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_runs_up_or_across_the_layers_and_there_is_no_circle():
    g = graph()
    assert violations(g, layers((REPO / "docs" / "architecture.md").read_text())) == []
    assert cycles(g) == []


def test_the_checks_catch_an_import_up_a_circle_and_a_sibling():
    rows = [["top"], ["left", "right"], ["bottom"]]
    g = {"tell.bottom.a": {"tell.top"}, "tell.left": {"tell.right"}, "tell.top": {"tell.bottom.a"}}
    assert violations(g, rows) == ["tell.bottom.a imports tell.top (top is above it)",
                                   "tell.left imports tell.right (right is beside it)"]
    assert cycles(g) == [["tell.bottom.a", "tell.top"]]
    assert cycles({"tell.a": {"tell.b"}, "tell.b": set()}) == []


def test_a_function_level_import_counts(tmp_path):
    pkg = tmp_path / "tell"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "x.py").write_text("def f():\n    from tell.config import build\n    from . import y\n")
    (pkg / "data" / "y.py").write_text("")
    (pkg / "config.py").write_text("")
    mods = {"tell", "tell.data", "tell.data.x", "tell.data.y", "tell.config"}
    assert imports(pkg / "data" / "x.py", mods, pkg) == {"tell.config", "tell.data", "tell.data.y"}


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_files_and_functions_stay_within_the_review_limits(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: over {MAX_FILE_LINES} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
