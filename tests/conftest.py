"""Shared fixtures: demos recorded in-process (once per session), script runners, the tiers.

The suite has two tiers (tests/README.md has the whole story and the timings):

- ``python -m pytest -m "not slow"``: the in-process tests, under a minute on 2 cores. A test
  there calls the library (or the click command in-process) and never starts a process.
- ``@pytest.mark.slow``: every test that runs a process (``gradtrace_cmd``, ``python_cmd``,
  ``fresh_gradtrace_cmd``, ``subprocess``), a corpus or a long end-to-end run. The helpers
  below refuse to run in a test not marked slow, so the fast tier stays fast.

``gradtrace_cmd`` and ``python_cmd`` run in a child forked from one warm process
(tests/runner.py); ``fresh_gradtrace_cmd`` is a real new interpreter, for the tests whose
point is a fresh process."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import runner

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"

os.environ.setdefault("MPLBACKEND", "Agg")

# A user's settings must not change what the tests see: no GRADTRACE_* setting of theirs,
# and no pyproject.toml above the checkout read (tests of the file's discovery unset
# GRADTRACE_CONFIG themselves).
for _name in [n for n in os.environ if n.startswith("GRADTRACE_")
              and n not in ("GRADTRACE_DEBUG", "GRADTRACE_UPDATE_GOLDEN")]:
    del os.environ[_name]
os.environ["GRADTRACE_CONFIG"] = ""


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


class RecordedDemos:
    """The demos, each (with its arguments) recorded once per session under
    gradtrace.trace() into one folder. The files are read-only: tests read them, copy them
    to change them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._done: dict = {}

    def _get(self, name: str, args: tuple):
        key = (name, tuple(args))
        if key not in self._done:
            path = self.folder / f"{name}{''.join(args)}.gtrace"
            t, g = record_demo(name, path, *args)
            os.chmod(path, 0o444)
            self._done[key] = (path, t.result, g)
        return self._done[key]

    def path(self, name: str, *args: str) -> Path:
        """The trace file of `python demos/NAME.py ARGS` recorded."""
        return self._get(name, args)[0]

    def trace(self, name: str, *args: str):
        """Its Trace."""
        return self._get(name, args)[1]

    def globals(self, name: str, *args: str) -> dict:
        """The globals the demo left (its final parameters among them)."""
        return self._get(name, args)[2]


@pytest.fixture(scope="session")
def recorded_demos(tmp_path_factory) -> RecordedDemos:
    """The session's one set of recorded demos (see RecordedDemos)."""
    return RecordedDemos(tmp_path_factory.mktemp("recorded-demos"))


@pytest.fixture(scope="session")
def _twenty_steps(tmp_path_factory) -> Path:
    import torch

    import gradtrace

    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    path = tmp_path_factory.mktemp("twenty-steps") / "run.gtrace"
    with gradtrace.trace(path):
        for _ in range(20):
            (X @ w).pow(2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return path


@pytest.fixture
def twenty_step_file(tmp_path, _twenty_steps) -> Path:
    """A 20-step run (a 3-weight least-squares loop) recorded once per session; each test
    gets its own copy, to read or to damage (the tracefile tests)."""
    path = tmp_path / "run.gtrace"
    shutil.copyfile(_twenty_steps, path)
    return path


@pytest.fixture(scope="session")
def demo_trace(recorded_demos):
    """demo_trace("linreg") -> the Trace of that demo, recorded once per test session."""
    return recorded_demos.trace


_RUNNING: list = []  # the test item being set up, run or torn down (one at a time per process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _RUNNING.append(item)
    try:
        yield
    finally:
        _RUNNING.pop()


def require_slow(what: str) -> None:
    """Fail the running test unless it is marked slow: running a process is the slow tier's."""
    if _RUNNING and _RUNNING[-1].get_closest_marker("slow") is None:
        pytest.fail(f"{_RUNNING[-1].nodeid} runs {what} but is not marked @pytest.mark.slow: a "
                    "test that starts a process belongs to the slow tier (tests/README.md); "
                    "mark it, or call the library in-process", pytrace=False)


def _env(env=None) -> dict:
    return dict(os.environ if env is None else env, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")


def gradtrace_cmd(*args: str, cwd=None, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    """`gradtrace ARGS` as `python -m gradtrace ARGS` runs it, in a child of the warm process
    (tests/runner.py): its own argv, cwd, environment, streams and exit status."""
    require_slow("gradtrace_cmd")
    return runner.gradtrace(*args, cwd=cwd, env=_env(env), timeout=timeout, **kw)


def python_cmd(script, *args: str, cwd=None, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` in a child of the warm process (for scripts that import torch)."""
    require_slow("python_cmd")
    return runner.python(script, *args, cwd=cwd, env=_env(env), timeout=timeout, **kw)


def fresh_gradtrace_cmd(*args: str, cwd=None, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    """`gradtrace ARGS` in a real new interpreter (python -m gradtrace, so PATH does not matter)."""
    require_slow("fresh_gradtrace_cmd")
    return subprocess.run([sys.executable, "-m", "gradtrace", *args], cwd=cwd, env=_env(env),
                          capture_output=True, text=True, timeout=timeout, **kw)


def gradtrace_main(capsys, *args: str) -> tuple[int, str, str]:
    """`gradtrace ARGS` through its real entry point (``gradtrace.cli.main``) in this
    process, for the fast tier: (exit code, stdout, stderr); ``capsys`` is the test's."""
    from gradtrace.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def imported_modules(stderr: str) -> set[str]:
    """The modules a run with ``PYTHONPROFILEIMPORTTIME=1`` (``-X importtime``) imported."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


# -- a real browser (the explorer's tests) ------------------------------------------------------
#: Debian's Chromium, driven by playwright (the test extra); .ci/run installs both.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the session, in a new empty profile. Never skipped: a
    missing browser fails, saying how to install it (`bash .ci/run` does)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -c constraints.txt -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (bash .ci/run does)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=CHROMIUM_ARGS, headless=True)
        try:
            yield context
        finally:
            context.close()
