"""The package type-checks: mypy, configured in pyproject.toml, finds no errors in gradtrace.

mypy (pinned in constraints.txt, part of the `test` extra) runs in this process through
``mypy.api``, so CI's plain ``python -m pytest`` type-checks too. Its cache is the repo's
``.mypy_cache`` (which mypy keeps out of git), shared with a ``python -m mypy`` by hand:
the first run reads torch's annotations (about a minute), later runs take seconds.
"""

from __future__ import annotations

import pytest
from mypy import api

from conftest import ROOT

pytestmark = pytest.mark.slow  # mypy: a minute cold (its cache lives in .mypy_cache); CI runs it


def test_mypy_reports_no_errors(monkeypatch):
    # From the repo root, so that mypy reads [tool.mypy] (files, overrides) from pyproject.toml.
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(ROOT / ".mypy_cache")])
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    report = "\n".join(errors) or (stdout + stderr)
    assert status == 0 and not errors, f"mypy found {len(errors)} error(s):\n{report}"
    assert "Success: no issues found" in stdout, stdout + stderr
