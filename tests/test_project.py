"""The project's promises about itself: README set-up commands, CI, pinned versions."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from conftest import ROOT


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Set-up: two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_gives_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert cmds[0].startswith("pip install -c constraints.txt") and cmds[0].endswith("gradtrace run demos/linreg.py")
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_every_dependency_is_pinned():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0"  # the local CPU build; never a CUDA download
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    for dep in deps:
        name = re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].lower()
        assert name in pins, f"{name} is not pinned in constraints.txt"


# -- tests mirror modules ---------------------------------------------------------------------
#: Test files about the whole tool rather than one module: the demos end to end, the docs'
#: examples, the corpora, the project's own rules, and the runs that span every layer.
SUITE_LEVEL = {"test_after_run", "test_demos", "test_distributed", "test_docs", "test_hostile",
               "test_idioms", "test_layers", "test_pipeline", "test_project", "test_types"}


def _mirror(module: Path) -> str | None:
    """``gradtrace/record/mode.py`` -> ``test_record_mode``; ``gradtrace/__init__.py`` ->
    ``test_gradtrace``; None for what holds no code of its own (``__main__``, a package
    ``__init__`` that is its docstring alone)."""
    parts = module.relative_to(ROOT / "gradtrace").with_suffix("").parts
    if parts[-1] == "__main__":
        return None
    if parts[-1] == "__init__":
        body = ast.parse(module.read_text()).body
        if all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body):
            return None
        parts = parts[:-1] or ("gradtrace",)
    return "test_" + "_".join(parts)


def _dotted(module: Path) -> str:
    parts = module.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(test: Path) -> set[str]:
    """Every module the test file imports (``from a.b import c`` counts as a.b and a.b.c)."""
    found = set()
    for node in ast.walk(ast.parse(test.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _names(test: Path, module: Path) -> bool:
    """The test file imports the module, or (a test through the command line or the public
    API) its docstring says which module it tests: ``cli/graph.py: `gradtrace graph` ...``."""
    if _dotted(module) in _imported(test):
        return True
    doc = ast.get_docstring(ast.parse(test.read_text())) or ""
    return str(module.relative_to(ROOT / "gradtrace")) in doc


MODULES = sorted((ROOT / "gradtrace").rglob("*.py"))


def test_every_module_has_its_own_test_file_and_it_names_the_module():
    missing, unimported = [], []
    for module in MODULES:
        name = _mirror(module)
        if name is None:
            continue
        test = ROOT / "tests" / f"{name}.py"
        if not test.exists():
            missing.append(f"{module.relative_to(ROOT)} -> tests/{name}.py")
        elif not _names(test, module):
            unimported.append(f"tests/{name}.py neither imports {_dotted(module)} nor names "
                              f"{module.relative_to(ROOT / 'gradtrace')} in its docstring")
    assert not missing, "modules without their test file:\n" + "\n".join(missing)
    assert not unimported, "\n".join(unimported)


def test_every_test_file_is_a_modules_or_the_suites():
    """``test_<module>.py`` or ``test_<module>_<topic>.py`` (``test_analysis_check_corpus``),
    else one of the suite-level files above: a new test file says what it tests by its name."""
    mirrors = {m for m in map(_mirror, MODULES) if m is not None}
    stray = []
    for test in sorted((ROOT / "tests").glob("test_*.py")):
        name = test.stem
        if name in SUITE_LEVEL:
            continue
        if not any(name == m or name.startswith(m + "_") for m in mirrors):
            stray.append(test.name)
    assert not stray, ("test files named after no module (rename them, or list a suite-level "
                       f"one in SUITE_LEVEL): {stray}")


def test_the_mirror_of_a_module_is_its_path():
    g = ROOT / "gradtrace"
    assert _mirror(g / "record" / "mode.py") == "test_record_mode"
    assert _mirror(g / "analysis" / "linear" / "fit.py") == "test_analysis_linear_fit"
    assert _mirror(g / "analysis" / "linear" / "__init__.py") == "test_analysis_linear"
    assert _mirror(g / "__init__.py") == "test_gradtrace"
    assert _mirror(g / "errors.py") == "test_errors"
    assert _mirror(g / "record" / "__init__.py") is None   # its docstring alone
    assert _mirror(g / "__main__.py") is None
    assert _names(ROOT / "tests" / "test_cli_graph.py", g / "cli" / "graph.py")   # by its docstring
    assert not _names(ROOT / "tests" / "test_cli_graph.py", g / "record" / "mode.py")
