"""Layout: no source under a folder that ignore templates treat as build output; no import cycle; the
layers import downwards only; no module uses another module's private names."""

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


def _is_lazy_map(node: ast.Assign) -> bool:
    return isinstance(node.value, ast.Dict) and any(
        isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """forcomp modules imported by ``name`` anywhere (top level and inside functions).

    Imports under ``if TYPE_CHECKING:`` never run and are skipped. ``from pkg import sub`` counts as
    an import of ``pkg.sub`` when that is a module, else of ``pkg``. The module names of a lazy
    ``_LAZY = {name: module}`` map count as imports too.
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
        if isinstance(node, ast.Assign) and _is_lazy_map(node):
            # ``_LAZY = {"Name": "forcomp.mod"}`` + ``importlib.import_module``: an import by another name
            values = node.value.values  # type: ignore[attr-defined]
            found.update(v.value for v in values if isinstance(v, ast.Constant))
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
    # the package root's lazy map reaches every layer, so the root is an entry point
    assert {"forcomp.metrics.bias", "forcomp.offline.entry", "forcomp.cache.verify"} <= g["forcomp"]


# ---------------------------------------------------------------- layers

# Bottom to top; a module may import its own group and any group of a lower layer, nothing else.
# Groups sharing a layer are peers and may not import each other (offline and metrics).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("cache",),
    ("recombine",),
    ("offline", "metrics"),
    ("entry",),
)

# Module (or package prefix) → group. The longest matching prefix wins; "forcomp" itself matches only
# the package root, whose lazy map reaches every layer. metrics.cli is here metrics: it only imports
# metrics modules and the models, and forcomp.cli registers it.
GROUPS: dict[str, str] = {
    "forcomp": "entry",
    "forcomp.__main__": "entry",
    "forcomp.cli": "entry",
    "forcomp.demo": "entry",
    "forcomp.preview": "entry",
    "forcomp.errors": "base",
    "forcomp.version": "base",
    "forcomp.weights": "base",
    "forcomp.decode": "base",
    "forcomp.safe_files": "base",
    "forcomp.models": "base",
    "forcomp.cache": "cache",
    "forcomp.recombine": "recombine",
    "forcomp.offline": "offline",
    "forcomp.metrics": "metrics",
}


def _group(module: str, groups: dict[str, str] = GROUPS) -> str | None:
    if module == "forcomp":
        return groups.get(module)
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in groups:
            return groups[prefix]
    return None


def _rank(group: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if group in layer)


def _layer_violations(graph: dict[str, set[str]], groups: dict[str, str] = GROUPS) -> list[str]:
    """Each import that goes upwards or sideways to a peer, as ``"a (group) -> b (group)"``."""
    out = []
    for a in sorted(graph):
        ga = _group(a, groups)
        for b in sorted(graph[a]):
            gb = _group(b, groups)
            if ga is None or gb is None or ga == gb:
                continue
            if _rank(ga) <= _rank(gb):
                out.append(f"{a} ({ga}) -> {b} ({gb})")
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in _modules() if _group(m) is None]
    assert not unplaced, f"modules without a layer (add them to GROUPS): {unplaced}"


def test_layers_import_downwards_only() -> None:
    bad = _layer_violations(_graph())
    order = " < ".join("{" + ", ".join(layer) + "}" for layer in LAYERS)
    assert not bad, f"imports against the layer order {order} (lazy imports count too):\n" + "\n".join(bad)


def test_layer_check_catches_upward_and_peer_imports(tmp_path: Path) -> None:
    files = {
        "cache/reader.py": (
            "def f():\n    from forcomp.recombine.dataset import ForComp\n    return ForComp\n"
        ),
        "recombine/dataset.py": "from forcomp.cache import reader\n",
        "offline/scoring.py": "from forcomp.metrics.bias import evaluate\n",
        "metrics/bias.py": "from forcomp.models import classifiers\n",
        "models/classifiers.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from forcomp.metrics import bias\n"
        ),
    }
    modules = {}
    for rel, text in files.items():
        path = tmp_path / "forcomp" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        modules["forcomp." + rel[: -len(".py")].replace("/", ".")] = path
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _layer_violations(graph) == [
        "forcomp.cache.reader (cache) -> forcomp.recombine.dataset (recombine)",
        "forcomp.offline.scoring (offline) -> forcomp.metrics.bias (metrics)",
    ]
    assert _rank("offline") == _rank("metrics") and _group("forcomp.metrics.cli") == "metrics"
    assert _group("forcomp") == "entry" and _group("forcomp.forcomp") is None


# ---------------------------------------------------------------- private names


def _defined_private_names(path: Path) -> set[str]:
    """Private names a module defines: top-level and class-level names, and ``self._x = ...``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
    return {n for n in names if _is_private(n)}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_uses(name: str, path: Path, modules: dict[str, Path], owners: dict[str, set[str]]) -> list[str]:
    """``from forcomp.x import _y`` of a name (a private module counts only outside its own package),
    and ``obj._y`` (``obj`` not ``self``/``cls``) where ``_y`` is a private name another forcomp
    module defines and this one does not. Each as ``"path:line: text"``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = owners.get(name, set())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("forcomp"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                inside = sub in modules and sub.rpartition(".")[0] == package
                if _is_private(a.name) and not inside:
                    out.append(f"{path}:{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")) and node.attr not in own:
                if any(node.attr in names for m, names in owners.items() if m != name):
                    out.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _all_private_uses(modules: dict[str, Path]) -> list[str]:
    owners = {m: _defined_private_names(p) for m, p in modules.items()}
    return [use for m, p in sorted(modules.items()) for use in _private_uses(m, p, modules, owners)]


def test_no_module_uses_another_modules_private_names() -> None:
    modules = _modules()
    uses = [u.replace(f"{ROOT}/", "") for u in _all_private_uses(modules)]
    assert not uses, "private names used outside their module (make them public or move them):\n" + (
        "\n".join(uses)
    )


def test_private_name_check_catches_imports_and_attribute_access(tmp_path: Path) -> None:
    pkg = tmp_path / "forcomp"
    (pkg / "recombine").mkdir(parents=True)
    files = {
        "recombine/functional.py": "def _premultiplied(x):\n    return x\n",
        "recombine/_geometry.py": "def plan():\n    return 1\n",
        "recombine/dataset.py": (
            "from forcomp.recombine.functional import _premultiplied\n"
            "from forcomp.recombine import _geometry\n"
            "class ForComp:\n    def __init__(self):\n        self._recombine = None\n"
            "    def _own(self, other):\n        return other._recombine\n"
        ),
        "recombine/loader.py": (
            "import os\ndef run(ds):\n    os._exit\n    return ds._recombine(ds.__class__)\n"
        ),
        "metrics/bias.py": "from forcomp.recombine import _geometry\n",
    }
    (pkg / "metrics").mkdir()
    modules = {}
    for rel, text in files.items():
        (pkg / rel).write_text(text)
        modules["forcomp." + rel[: -len(".py")].replace("/", ".")] = pkg / rel
    uses = [u.replace(f"{pkg}/", "") for u in _all_private_uses(modules)]
    assert uses == [
        "metrics/bias.py:1: from forcomp.recombine import _geometry",
        "recombine/dataset.py:1: from forcomp.recombine.functional import _premultiplied",
        "recombine/loader.py:4: ds._recombine",
    ]


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
