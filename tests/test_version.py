"""gradtrace/version.py: the one home of the version, on the ground floor, and where it shows."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from packaging.version import Version

import gradtrace
from conftest import gradtrace_main
from gradtrace import version
from gradtrace.version import __version__


def test_the_version_is_a_normalised_public_pep_440_release():
    v = Version(__version__)
    assert str(v) == __version__          # written as PEP 440 normalises it
    assert v.local is None and not v.is_devrelease
    assert len(v.release) == 3


def test_the_module_imports_nothing_and_holds_only_the_version():
    """Ground floor: everything may import it, it imports nothing."""
    tree = ast.parse(Path(version.__file__).read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [n for n in vars(version) if not n.startswith("__")] == []
    assert ast.get_docstring(tree) and "\n" not in ast.get_docstring(tree)


def test_the_package_exports_the_same_object():
    assert gradtrace.__version__ is __version__ and "__version__" in gradtrace.__all__


def test_the_command_reports_it(capsys):
    code, out, err = gradtrace_main(capsys, "--version")
    assert (code, err) == (0, "")
    assert out == f"gradtrace, version {__version__}\n"


def test_a_trace_records_the_version_that_wrote_it():
    w = torch.ones(2, requires_grad=True)
    with gradtrace.trace() as t:
        (w * 2).sum().backward()
    assert t.info.gradtrace_version == __version__
