"""Shared fixtures: demos recorded in-process (once per session), script runners."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"

os.environ.setdefault("MPLBACKEND", "Agg")


def run_demo_plain(name: str, *args: str) -> dict:
    """Run demos/<name>.py in this process without gradtrace; its globals."""
    argv = sys.argv
    sys.argv = [str(DEMOS / f"{name}.py"), *args]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return runpy.run_path(str(DEMOS / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = argv


def record_demo(name: str, path=None, *args: str, **options):
    """Run demos/<name>.py in this process under gradtrace.trace(); (trace, globals)."""
    import gradtrace

    argv = sys.argv
    sys.argv = [str(DEMOS / f"{name}.py"), *args]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            with gradtrace.trace(path, **options) as t:
                g = runpy.run_path(str(DEMOS / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = argv
    return t, g


_CACHE: dict = {}


@pytest.fixture(scope="session")
def demo_trace():
    """demo_trace("linreg") -> the Trace of that demo, recorded once per test session."""

    def get(name: str):
        if name not in _CACHE:
            _CACHE[name] = record_demo(name)[0].result
        return _CACHE[name]

    return get


def gradtrace_cmd(*args: str, cwd=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    """`gradtrace ARGS` in a real subprocess (python -m gradtrace, so PATH does not matter)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "gradtrace", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
