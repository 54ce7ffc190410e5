"""The layers of docs/architecture.md, enforced: imports point down, render has no torch or click, no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

PKG = ROOT / "gradtrace"

# What each layer may import (besides itself). record and analysis are siblings: neither
# imports the other; render stands on analysis and tracefile, never on record.
GROUND, TRACEFILE, RECORD, ANALYSIS, RENDER, CLI, FACADE = (
    "ground", "tracefile", "record", "analysis", "render", "cli", "facade")
MAY_IMPORT = {
    GROUND: {GROUND},
    TRACEFILE: {GROUND, TRACEFILE},
    RECORD: {GROUND, TRACEFILE, RECORD},
    ANALYSIS: {GROUND, TRACEFILE, ANALYSIS},
    RENDER: {GROUND, TRACEFILE, ANALYSIS, RENDER},
    CLI: {GROUND, TRACEFILE, RECORD, ANALYSIS, RENDER, CLI},
    FACADE: {GROUND, TRACEFILE, RECORD, ANALYSIS, RENDER, CLI, FACADE},
}
# Third-party packages a layer must not import at all, not even inside a function.
FORBIDDEN_EXTERNAL = {RENDER: {"torch", "click"}}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "gradtrace", module
    if len(parts) == 1:
        return FACADE
    top = parts[1]
    if top in ("errors", "config", "version", "formatting"):
        return GROUND
    if top == "__main__":
        return CLI
    if top in ("tracefile", "record", "analysis", "render", "cli"):
        return top
    raise AssertionError(f"gradtrace/{'/'.join(parts[1:])}: module in no layer; add it to tests/test_layers.py")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


@dataclass(frozen=True)
class Import:
    source: str       # the importing module
    target: str       # the imported module, gradtrace.* or a third-party top-level name
    line: int
    module_level: bool  # runs when the importing module is imported

    def where(self) -> str:
        return f"{MODULES[self.source].relative_to(ROOT)}:{self.line}"


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute module a relative import names, seen from `module`."""
    is_pkg = MODULES[module].name == "__init__.py"
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    out: list[Import] = []

    def add(target: str, line: int, module_level: bool) -> None:
        if target.startswith("gradtrace.") or target == "gradtrace":
            # `import gradtrace.a.b` names the deepest part that is a module of ours.
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
        else:
            target = target.split(".", 1)[0]
        out.append(Import(module, target, line, module_level))

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            module_level = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            # Annotations only: a dependency (checked for layers) that never runs (no cycle).
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, module_level)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node.level, node.module) if node.level else (node.module or "")
            if base == "gradtrace" or base.startswith("gradtrace."):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in MODULES else base, node.lineno, module_level)
            else:
                add(base, node.lineno, module_level)
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            if name in ("__import__", "import_module") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    target = arg.value
                    if target.startswith(".") and name == "import_module":
                        level = len(target) - len(target.lstrip("."))
                        target = _resolve(module, level, target.lstrip(".") or None)
                    add(target, node.lineno, module_level)
        for child in ast.iter_child_nodes(node):
            visit(child, module_level)

    visit(tree, True)
    return out


ALL_IMPORTS = [imp for module in MODULES for imp in _imports_of(module)]
OURS = [imp for imp in ALL_IMPORTS if imp.target.split(".")[0] == "gradtrace"]


def upward_imports() -> list[str]:
    bad = []
    for imp in OURS:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if dst not in MAY_IMPORT[src]:
            bad.append(f"{imp.where()}: {imp.source} ({src}) imports {imp.target} ({dst})")
    return bad


def forbidden_externals() -> list[str]:
    bad = []
    for imp in ALL_IMPORTS:
        if imp.target in FORBIDDEN_EXTERNAL.get(layer_of(imp.source), ()):
            bad.append(f"{imp.where()}: {imp.source} ({layer_of(imp.source)}) imports {imp.target}")
    return bad


def cycles() -> list[str]:
    """Each cycle among module-level imports, as `a -> b -> a` with the file:line of each edge."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in OURS:
        if imp.module_level and imp.target != imp.source:
            edges[imp.source].setdefault(imp.target, imp)
    # Tarjan's strongly connected components; a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    found = []
    for comp in components:
        members = set(comp)
        # The shortest cycle through the component's first module (breadth-first inside it).
        start = comp[0]
        parent: dict[str, str] = {}
        queue, end = [start], None
        while queue and end is None:
            v = queue.pop(0)
            for w in sorted(edges[v]):
                if w == start:
                    end = v
                    break
                if w in members and w not in parent:
                    parent[w] = v
                    queue.append(w)
        path = [start]
        while end is not None and end != start:
            path.insert(1, end)
            end = parent[end]
        path.append(start)
        steps = [f"{a} ({edges[a][b].where()})" for a, b in zip(path, path[1:]) if b in edges[a]]
        found.append(" -> ".join(steps + [start]) + f"  [component: {', '.join(comp)}]")
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down():
    bad = upward_imports()
    assert not bad, "imports that point up (see docs/architecture.md):\n" + "\n".join(bad)


def test_render_imports_neither_torch_nor_click():
    bad = forbidden_externals()
    assert not bad, "render works from the trace model alone:\n" + "\n".join(bad)


def test_no_import_cycles():
    bad = cycles()
    assert not bad, "import cycles among gradtrace modules:\n" + "\n".join(bad)


def test_the_checker_sees_what_it_must():
    """The scan itself: relative, absolute, in-function and __import__ imports are all found."""
    seen = {(imp.source, imp.target) for imp in ALL_IMPORTS}
    assert ("gradtrace.tracefile.store", "gradtrace.tracefile.checked") in seen  # from . import checked
    assert ("gradtrace.tracefile.store", "gradtrace.errors") in seen             # from ..errors import
    assert ("gradtrace.cli", "gradtrace.cli.graph") in seen                      # __import__("gradtrace.cli.graph")
    assert any(imp.source == "gradtrace.cli.run" and imp.target == "gradtrace.record.figures"
               and not imp.module_level for imp in ALL_IMPORTS)                  # inside a function
    assert ("gradtrace.tracefile.store", "torch") in seen


def test_the_checker_catches_violations(tmp_path, monkeypatch):
    """A planted upward import, a planted torch import in render and a planted cycle are reported."""
    fake = {
        "gradtrace.tracefile.fake": "def f():\n    from ..render import graph\n",
        "gradtrace.render.fake": "import gradtrace.tracefile.fake2\n\ndef g():\n    __import__('torch')\n",
        "gradtrace.tracefile.fake2": "from . import fake3\n",
        "gradtrace.tracefile.fake3": "from .fake2 import x\n",
    }
    for name, text in fake.items():
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        monkeypatch.setitem(MODULES, name, path)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path, raising=False)
    imports = [imp for name in fake for imp in _imports_of(name)]
    monkeypatch.setattr(sys.modules[__name__], "ALL_IMPORTS", imports)
    monkeypatch.setattr(sys.modules[__name__], "OURS", [i for i in imports if i.target.startswith("gradtrace")])
    up = upward_imports()
    assert len(up) == 1 and "gradtrace/tracefile/fake.py:2" in up[0] and "gradtrace.render.graph" in up[0]
    ext = forbidden_externals()
    assert len(ext) == 1 and "gradtrace/render/fake.py:4" in ext[0] and "torch" in ext[0]
    cyc = cycles()
    assert len(cyc) == 1 and "gradtrace.tracefile.fake2" in cyc[0] and "gradtrace.tracefile.fake3" in cyc[0]


@pytest.mark.slow  # a fresh interpreter
def test_the_trace_file_module_imports_on_its_own():
    code = "import gradtrace.tracefile.store as s; print(s.Trace.__name__, s.load.__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["Trace", "load"]


@pytest.mark.slow  # a fresh interpreter
def test_one_version_everywhere():
    import gradtrace
    from gradtrace.version import __version__

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__ == gradtrace.__version__
    r = subprocess.run([sys.executable, "-m", "gradtrace", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and __version__ in r.stdout, r.stdout + r.stderr


@pytest.mark.slow  # a fresh interpreter
def test_conveniences_dispatch_through_the_facade(recorded_demos):
    """trace.check(), trace.animate() and step.graph() work on a Trace from the trace file
    layer alone (the facade, imported first as the parent package, registers them)."""
    path = recorded_demos.path("linreg")
    code = (
        "import gradtrace.tracefile.store as s, sys\n"
        "t = s.load(sys.argv[1])\n"
        "print(type(t.check()).__name__)\n"
        "print(type(t.steps[0].graph(view='forward')).__name__)\n"
        "print(type(t.animate(kind='training', frames=2)).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CheckReport", "GraphPicture", "Animation"]
