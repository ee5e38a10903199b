"""Layout: no source under a folder that ignore templates treat as build output; no import cycle."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "forcomp"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """forcomp modules imported by ``name`` anywhere (top level and inside functions).

    Imports under ``if TYPE_CHECKING:`` never run and are skipped. ``from pkg import sub`` counts as
    an import of ``pkg.sub`` when that is a module, else of ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(base: str, names: list[str]) -> None:
        for n in names:
            sub = f"{base}.{n}"
            found.add(sub if sub in modules else base)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "forcomp":
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg_parts = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg_parts = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                base = ".".join([*pkg_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] == "forcomp":
                resolve(base, [a.name for a in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_inside_forcomp() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (lazy imports inside functions count too): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_detector_sees_a_lazy_import_cycle(tmp_path: Path) -> None:
    # The detector itself must see an import inside a function (the kind that hid build/pipeline's cycle).
    graph = {"forcomp.a": {"forcomp.b"}, "forcomp.b": {"forcomp.a"}, "forcomp.c": {"forcomp.a"}}
    assert _cycles(graph) == [["forcomp.a", "forcomp.b"]]
    modules = {"forcomp.x": tmp_path / "x.py", "forcomp.y": tmp_path / "y.py"}
    src = tmp_path / "x.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from forcomp import z\n"
        "def f():\n    from forcomp.y import g\n    return g\n"
    )
    assert _imports("forcomp.x", src, modules) == {"forcomp.y"}


def test_graph_sees_the_real_edges() -> None:
    # Guards the walker against silently finding nothing: known one-way edges must be there.
    g = _graph()
    assert "forcomp.offline.pipeline" in g["forcomp.offline.engines"]
    assert "forcomp.offline.engines" in g["forcomp.offline.entry"]
    assert "forcomp.metrics.report" in g["forcomp.metrics.plots"]
    assert "forcomp.metrics.plots" in g["forcomp.metrics.output"]
    assert "forcomp.metrics.plots" not in g["forcomp.metrics.report"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_no_source_under_a_commonly_ignored_folder(tmp_path: Path) -> None:
    """Unanchored ``build/``, ``dist/``, ``out/`` (GitHub's Python template) must match no package file."""
    rules = tmp_path / "ignore"
    rules.write_text("build/\ndist/\nout/\n")
    files = [
        str(p.relative_to(ROOT))
        for p in sorted(PKG.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]
    files += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").rglob("*.py"))]
    assert files
    r = subprocess.run(
        ["git", "-c", f"core.excludesFile={rules}", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode in (0, 1), r.stderr
    matched = [ln for ln in r.stdout.splitlines() if ln]
    assert not matched, f"source files a common ignore file would drop: {matched}"
    # the probe itself works: a path under build/ is matched by the same rules
    probe = subprocess.run(
        ["git", "-c", f"core.excludesFile={rules}", "check-ignore", "--no-index", "forcomp/build/x.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert probe.returncode == 0, probe.stderr
