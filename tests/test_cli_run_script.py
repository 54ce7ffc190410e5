"""`gradtrace run` against `python` itself, in real subprocesses: the same script run both
ways gives the same output, the same exit status, the same traceback and warnings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import gradtrace
from conftest import gradtrace_cmd

pytestmark = pytest.mark.slow  # every test here runs `gradtrace run` and python as processes

QUIET = ("--no-report", "--no-animate")


def _script(tmp_path, body, name="script.py"):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(body))
    return p


def _python(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _theirs(stderr: str) -> str:
    """stderr without gradtrace's own lines: what the script (or python) wrote."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("gradtrace: "))


def _package(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "show.py").write_text("import sys\nprint(sys.argv[1:])\n")


def test_module_gets_every_argument_after_its_name(tmp_path):
    _package(tmp_path)
    args = ["--every", "3", "-o", "x", "--", "-m", "y"]
    plain = _python("-m", "pkg.show", *args, cwd=tmp_path)
    for traced in (gradtrace_cmd("run", *QUIET, "-m", "pkg.show", *args, cwd=tmp_path),
                   gradtrace_cmd("run", "--every", "2", "-mpkg.show", *args, cwd=tmp_path)):
        assert traced.returncode == plain.returncode == 0, traced.stderr
        assert traced.stdout == plain.stdout == f"{args}\n"
    # --every 3 went to the module, not to us: the default trace path, every step recorded
    assert (tmp_path / "gradtrace-out" / "show" / "trace.gtrace").is_file()
    assert not (tmp_path / "x").exists()


def test_unknown_option_before_the_script_is_a_usage_error(tmp_path):
    p = _script(tmp_path, "print('ran')\n")
    r = gradtrace_cmd("run", "--evry", "3", str(p), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stdout == ""  # the script did not run
    assert "No such option '--evry'" in r.stderr and "Did you mean '--every'?" in r.stderr
    assert "no such script" not in r.stderr
    r = gradtrace_cmd("run", "-x", str(p), cwd=tmp_path)
    assert r.returncode == 2 and "No such option '-x'" in r.stderr
    # after the script, the same option is the script's
    r = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), "--evry", "3", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr


def test_module_that_cannot_run_exits_1_with_pythons_message(tmp_path):
    _package(tmp_path)
    for module, said in [("no_such_module", "No module named no_such_module"),
                         ("pkg", "No module named pkg.__main__; 'pkg' is a package and cannot "
                                 "be directly executed"),
                         ("nosuch.sub", "Error while finding module specification for "
                                        "'nosuch.sub' (ModuleNotFoundError: No module named "
                                        "'nosuch')")]:
        plain = _python("-m", module, cwd=tmp_path)
        traced = gradtrace_cmd("run", "-m", module, cwd=tmp_path)
        assert traced.returncode == plain.returncode == 1
        assert plain.stderr == f"{sys.executable}: {said}\n"
        assert traced.stderr == f"gradtrace: error: {said}\n"  # one line, nothing recorded
        assert traced.stdout == plain.stdout == ""
    assert not (tmp_path / "gradtrace-out").exists()


SLEEPS = """
import atexit, time, torch
atexit.register(lambda: print("atexit ran", flush=True))
w = torch.ones(2, requires_grad=True)
for i in range(4):
    (w * 2).sum().backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    w.grad = None
print("ready", flush=True)
while True:  # the signal lands here, in the sleep, in both runs
    time.sleep(0.05)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_trace_then_dies_by_it_as_python(tmp_path, sig):
    p = _script(tmp_path, SLEEPS)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ran = {}
    for way, cmd in [("python", [sys.executable, str(p)]),
                     ("gradtrace", [sys.executable, "-m", "gradtrace", "run", *QUIET, "-o",
                                    "out.gtrace", str(p)])]:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.3)  # past the print: in the sleep loop, whatever the machine's load
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        ran[way] = (proc.returncode, out, _theirs(err))
    assert ran["gradtrace"] == ran["python"]
    code, out, err = ran["python"]
    assert code == -sig  # died by the signal, not exit(128 + n)
    if sig == signal.SIGINT:  # the traceback, then the exit handlers, then death by SIGINT
        assert out == "atexit ran\n"
        assert err.startswith("Traceback (most recent call last):\n")
        assert err.endswith("    time.sleep(0.05)\nKeyboardInterrupt\n")
    else:  # at once and without a word
        assert out == "" and err == ""
    t = gradtrace.load(tmp_path / "out.gtrace")
    assert t.info.status == "interrupted"
    # four finished steps, then a sleep: each step is written once its update is done
    assert len(t.steps) >= 3 and t.steps.indices == list(range(len(t.steps)))
    assert {"accumulate", "update"} <= {e.kind for e in t.steps[2].events}


RAISES = {
    # inside a torch op the recorder dispatched, then chained to the user's own exception
    "chained.py": """
        import torch
        def f(a):
            try:
                return a @ torch.ones(4, 5)
            except RuntimeError as e:
                raise ValueError("wrapped") from e
        f(torch.ones(2, 3))
    """,
    # a torch function written in python, which hands itself to the mode and is called again
    "einsum.py": """
        import torch
        torch.einsum("ij,jk->ik", torch.ones(2, 3), torch.ones(4, 5))
    """,
    "syntax.py": "x = 1\ndef (:\n",
    "imports_bad.py": "import bad_syntax\n",
}


@pytest.mark.parametrize("name", sorted(RAISES))
def test_traceback_is_pythons_with_the_users_frames_only(tmp_path, name):
    p = _script(tmp_path, RAISES[name], name)
    (tmp_path / "bad_syntax.py").write_text("y = (\n")
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 1
    assert traced.stdout == plain.stdout == ""
    assert _theirs(traced.stderr) == plain.stderr
    assert "gradtrace" not in plain.stderr and "click" not in plain.stderr
    if name == "syntax.py":  # file, line, caret, message: no frames at all
        assert plain.stderr.startswith(f'  File "{p}", line 2\n')
        assert plain.stderr.endswith("SyntaxError: invalid syntax\n")
    else:
        assert plain.stderr.startswith("Traceback (most recent call last):\n")


WARNS = """
import warnings, torch
t = torch.ones(3)
for i in range(2):
    u = torch.tensor(t)  # torch's C++ warning, raised inside the op: shown once for this line
v = torch.tensor(t)  # the same warning from another line: shown again
with warnings.catch_warnings(record=True) as got:
    warnings.simplefilter("always")
    torch.tensor(t)
print([(w.filename, w.lineno, w.category.__name__) for w in got])
warnings.filterwarnings("ignore", module="__main__")  # a filter on the user's module
torch.tensor(t + 1)
warnings.resetwarnings()
warnings.filterwarnings("error", message="To copy")
try:
    torch.tensor(t)
except UserWarning as e:
    print("raised at line", e.__traceback__.tb_lineno)
"""


def test_warnings_from_torch_ops_point_at_the_users_line(tmp_path):
    p = _script(tmp_path, WARNS)
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout
    assert plain.stdout == f"[({str(p)!r}, 9, 'UserWarning')]\nraised at line 16\n"
    assert _theirs(traced.stderr) == plain.stderr
    shown = [line for line in plain.stderr.splitlines() if "UserWarning: To copy" in line]
    assert [line.split(": ")[0] for line in shown] == [f"{p}:5", f"{p}:6"]


def test_warnings_from_torchs_python_code_point_at_the_users_line(tmp_path):
    """F.softmax without dim= warns with stacklevel=3, a full backward hook from inside the
    backward pass: python locates both at the script's line. Under the mode the frames it
    inserts were counted, and the warnings pointed into torch (functional.py, _tensor.py)."""
    p = _script(tmp_path, """
        import torch, torch.nn.functional as F
        lin = torch.nn.Linear(4, 3)
        lin.register_full_backward_hook(lambda m, gi, go: None)
        x = torch.randn(5, 4)
        for i in range(2):
            p = F.softmax(lin(x))
            p.pow(2).sum().backward()
    """)
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert _theirs(traced.stderr) == plain.stderr
    assert [line.split(": ")[0] for line in plain.stderr.splitlines() if "UserWarning" in line] \
        == [f"{p}:7", f"{p}:8"]


@pytest.mark.parametrize("code", ["not main()", "True", "False", "2**40", "-1"])
def test_exit_code_of_sys_exit_is_the_one_python_exits_with(tmp_path, code):
    p = _script(tmp_path, f"""
        import sys, torch
        def main():
            (torch.ones(2, requires_grad=True) * 2).sum().backward()
            return False
        sys.exit({code})
    """)
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", "--no-animate", "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode, traced.stderr
    assert f"(exit code {plain.returncode})" in traced.stderr
    assert gradtrace.load(tmp_path / "t.gtrace").info.exit_code == plain.returncode
    # the readers take the trace: the check and the report ran on it
    assert "check skipped" not in traced.stderr and "report: " in traced.stderr, traced.stderr


def test_os_exit_keeps_the_trace_and_its_exit_code(tmp_path):
    """os._exit ends the process without unwinding: the trace stayed "running", the steps
    of the last 0.2 s were lost (all 50 of a short run) and the lock file stayed."""
    p = _script(tmp_path, """
        import os, torch
        w = torch.ones(2, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        for i in range(50):
            opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
        print("done", flush=True)
        os._exit(5)
    """)
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", "--no-animate", "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 5 and traced.stdout == plain.stdout == "done\n"
    assert "the script called os._exit(5): the trace is saved" in traced.stderr, traced.stderr
    t = gradtrace.load(tmp_path / "t.gtrace")
    assert (t.info.status, t.info.exit_code, len(t.steps)) == ("exited", 5, 50)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["script.py", "t.gtrace"]


FORKS = """
import os, signal, sys, time, torch
w = torch.ones(2, requires_grad=True)
(w * 2).sum().backward()
pid = os.fork()
if pid == 0:  # the script's child: the script's signal handlers, and an exit of its own
    print("child's handlers are the script's:", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
          signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
    (w * 5).sum().backward()
    sys.exit(3)
print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
pid = os.fork()
if pid == 0:  # as Pool.terminate() ends a worker
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(9)
print("terminated child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
(w * 3).sum().backward()
print("parent", w.grad.tolist())
"""


def test_a_forked_child_is_the_scripts_not_gradtraces(tmp_path):
    p = _script(tmp_path, FORKS)
    plain = _python(str(p), cwd=tmp_path)
    traced = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", str(p), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout == ("child's handlers are the script's: True True\n"
                                             "child exit 3\nterminated child -15\n"
                                             "parent [5.0, 5.0]\n")
    assert _theirs(traced.stderr) == plain.stderr == ""
    # the parent's end of the run, once: no second summary, no 'database is locked'
    said = traced.stderr.splitlines()
    assert len([line for line in said if " steps, " in line]) == 1, traced.stderr
    assert said[-1] == "gradtrace: next: gradtrace summary t.gtrace"
    t = gradtrace.load(tmp_path / "t.gtrace")
    assert (t.info.status, len(t.steps)) == ("completed", 2)  # the parent's two steps
    assert not (tmp_path / "t.gtrace.lock").exists()


NAMESPACE = '''
"""The script's own docstring."""
import sys, torch
(torch.ones(2, requires_grad=True) * 2).sum().backward()
__builtins__.print("builtins is a", type(__builtins__).__name__)  # AttributeError on a dict
for name, value in sorted(globals().items()):
    if name.startswith("__") and name != "__builtins__":
        print(name, type(value).__name__, value if name != "__loader__" else "")
print("loader", __loader__.name, __loader__.get_filename(), __loader__.get_source("__main__")[:34])
print("code", sys._getframe().f_code.co_filename, "path0", sys.path[0])
'''


def test_the_scripts_main_namespace_is_pythons(tmp_path):
    _script(tmp_path, NAMESPACE, "real/script.py")
    (tmp_path / "link.py").symlink_to(tmp_path / "real" / "script.py")  # named as typed, as python
    plain = _python("link.py", cwd=tmp_path)
    traced = gradtrace_cmd("run", *QUIET, "-o", "t.gtrace", "link.py", cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout, traced.stderr
    link = tmp_path / "link.py"
    assert plain.stdout.splitlines() == [
        "builtins is a module",
        "__annotations__ dict {}", "__cached__ NoneType None",
        "__doc__ str The script's own docstring.", f"__file__ str {link}",
        "__loader__ SourceFileLoader ", "__name__ str __main__", "__package__ NoneType None",
        "__spec__ NoneType None",
        f"loader __main__ {link} ", '"""The script\'s own docstring."""',  # the source's start
        f"code {link} path0 {tmp_path / 'real'}"]
    assert _theirs(traced.stderr) == plain.stderr == ""
