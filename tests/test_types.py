"""The package type-checks: mypy, configured in pyproject.toml, finds no errors in gradtrace."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_mypy_reports_no_errors():
    # From the repo root so mypy reads [tool.mypy] (files, overrides) from pyproject.toml.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Success" in output, output
