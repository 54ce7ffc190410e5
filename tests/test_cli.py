"""gradtrace/cli/__init__.py and errors.py: the exit codes, lookup errors, and a fast start."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
import torch

import gradtrace
from gradtrace import errors
from conftest import gradtrace_main

HEAVY = ("torch", "matplotlib")

#: Runs gradtrace's entry point with argv, then prints which heavy modules it imported.
PROBE = """
import json, sys
from gradtrace.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
sys.stdout.flush()
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "t.gtrace"
    w = torch.ones(2, requires_grad=True)
    with gradtrace.trace(path):
        for _ in range(3):
            ((w * 3 - 1) ** 2).sum().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return path


def _probe(*argv) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stderr.strip().splitlines()[-1])


@pytest.mark.slow  # fresh interpreters: what an import costs
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["summary", "TRACE"],
                                  ["summary", "--json", "TRACE"]])
def test_help_version_and_summary_import_neither_torch_nor_matplotlib(small_trace, argv):
    res = _probe(*[str(small_trace) if a == "TRACE" else a for a in argv])
    assert res == {"code": 0, "heavy": []}


@pytest.mark.slow  # fresh interpreters: what an import costs
def test_import_gradtrace_is_cheap_and_its_names_still_there(small_trace):
    code = ("import sys, gradtrace; assert 'torch' not in sys.modules; "
            f"t = gradtrace.load({str(small_trace)!r}); print(len(t.steps), 'torch' in sys.modules); "
            "v = t.steps[0].backward.root_value; print(v.item(), v.array.dtype, 'torch' in sys.modules); "
            "print(v.data.dtype, 'torch' in sys.modules); "
            "print(gradtrace.trace.__name__, gradtrace.Step.__name__, gradtrace.Trace.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # Reading steps and their values as numpy needs no torch; a value's tensor brings it in.
    assert r.stdout.split("\n")[:4] == ["3 False", "8.0 float32 False", "torch.float32 True",
                                         "trace Step Trace"]
    assert set(gradtrace.__all__) <= set(dir(gradtrace))
    with pytest.raises(AttributeError):
        gradtrace.no_such_name  # noqa: B018


@pytest.mark.slow  # fresh interpreters: what an import costs
def test_python_x_importtime_help_shows_no_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "gradtrace", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Usage: gradtrace" in r.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "gradtrace.cli" in imported
    assert not imported & set(HEAVY)


# -- exit codes ------------------------------------------------------------------------------------

def test_each_error_class_has_its_exit_code():
    assert (errors.EXIT_OK, errors.EXIT_FAILURE, errors.EXIT_USAGE, errors.EXIT_CHECK_FAILED) == (0, 1, 2, 3)
    table = {errors.UsageError: 2, errors.TraceFileError: 2, errors.TraceWriteError: 1,
             errors.RenderError: 1, errors.NothingToDrawError: 2, errors.NotRecordedError: 2,
             errors.FrameIndexError: 2}
    assert {cls: cls.exit_code for cls in table} == table
    assert issubclass(errors.TraceWriteError, errors.TraceFileError)  # old excepts still catch it
    assert issubclass(errors.NothingToDrawError, errors.RenderError)


def test_usage_errors_exit_2(small_trace, capsys):
    code, _, err = gradtrace_main(capsys, "summary", "--no-such-option", str(small_trace))
    assert code == 2 and "No such option" in err
    code, _, err = gradtrace_main(capsys, "graph", str(small_trace), "--step", "99")
    assert code == 2 and err == "gradtrace: error: step 99 was not recorded; recorded steps are 0..2\n"


def test_a_full_disk_is_one_line_and_exit_1(small_trace, capsys, monkeypatch):
    def full(trace):
        raise OSError(errno.ENOSPC, "No space left on device", "out.txt")

    monkeypatch.setattr("gradtrace.cli.summary.summarize", full)
    code, _, err = gradtrace_main(capsys, "summary", str(small_trace))
    assert code == 1
    assert err == ("gradtrace: error: out.txt: No space left on device; free some space or "
                   "choose another path\n")


def test_an_internal_error_exits_1(small_trace, capsys, monkeypatch):
    def bug(trace):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("gradtrace.cli.summary.summarize", bug)
    monkeypatch.delenv("GRADTRACE_DEBUG", raising=False)
    code, _, err = gradtrace_main(capsys, "summary", str(small_trace))
    assert code == 1 and err.count("\n") == 1 and "internal error (ZeroDivisionError: oops" in err


# -- lookups: gradtrace errors that are still KeyError / IndexError ---------------------------------

def test_lookup_errors_say_what_exists(small_trace):
    t = gradtrace.load(small_trace)
    with pytest.raises(errors.NotRecordedError) as e:
        t.step(7)
    assert isinstance(e.value, KeyError) and isinstance(e.value, gradtrace.GradtraceError)
    assert str(e.value) == "step 7 was not recorded; recorded steps are 0..2"  # not quoted
    step = t.step(1)
    first, last = step.ops[0].index, step.ops[-1].index
    with pytest.raises(KeyError, match=rf"^op 9999 is not in step 1; its ops are {first}..{last}$"):
        step.op(9999)
    anim = t.animate(kind="training", frames=2)
    with pytest.raises(errors.FrameIndexError) as e:
        anim.frame(5)
    assert isinstance(e.value, IndexError)
    assert str(e.value) == "no frame 5: the animation has frames 0..1 (or -2..-1 from the end)"
