"""The shape of the code, as a new contributor meets it: file and class sizes, function
sizes (median / p90 / max), annotations and docstrings.

    python benchmarks/code_shape.py [PACKAGE_DIR]

Counts lines of each function from its `def` to its last line (decorators excluded), as
coverage.py-style reviews do; nested functions count on their own and inside their parent.
The import direction and cycles are checked by tests/test_layers.py, not here.
"""

from __future__ import annotations

import argparse
import ast
import statistics
from pathlib import Path


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(root: Path) -> None:
    files: list[tuple[int, str]] = []
    classes: list[tuple[int, str, int]] = []
    sizes: list[int] = []
    annotated = documented = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        rel = str(path.relative_to(root.parent))
        files.append((len(text.splitlines()), rel))
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)
                classes.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}", methods))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append(node.end_lineno - node.lineno + 1)
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                args = [a for a in args if a.arg not in ("self", "cls")]
                if node.returns is not None and all(a.annotation is not None for a in args):
                    annotated += 1
                if ast.get_docstring(node):
                    documented += 1
    files.sort(reverse=True)
    classes.sort(reverse=True)
    print(f"{len(files)} files, {sum(n for n, _ in files)} lines, {len(sizes)} functions")
    print("largest files:", ", ".join(f"{name} {n}" for n, name in files[:5]))
    print("largest classes:", ", ".join(f"{name} {n} lines/{m} methods" for n, name, m in classes[:5]))
    print(f"function lines: median {statistics.median(sizes):g}, p90 {_percentile(sizes, 0.9)}, "
          f"max {max(sizes)}")
    print(f"annotated {100 * annotated / len(sizes):.0f} %, docstrings {100 * documented / len(sizes):.0f} %")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[1] / "gradtrace",
                        help="the package folder (default: this checkout's gradtrace/)")
    package = parser.parse_args().package
    if not package.is_dir() or not any(package.rglob("*.py")):
        parser.error(f"{package}: not a folder of Python files")
    main(package)
