"""cli/run.py: `gradtrace run` and `gradtrace summary` in real subprocesses: python's
behaviour, exit codes, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import gradtrace
from conftest import DEMOS, gradtrace_cmd, python_cmd

pytestmark = pytest.mark.slow  # every test here runs `gradtrace run` or `summary` as a process

LOOP = """
import sys, time, torch
torch.manual_seed(0)
w = torch.randn(3, 1, requires_grad=True)
X = torch.randn(8, 3)
for i in range(100000):
    (X @ w).pow(2).mean().backward()
    with torch.no_grad():
        w -= 0.01 * w.grad
        w.grad.zero_()
    if i == 20:
        print("ready", flush=True)
"""


def _wait_ready(proc):
    """The child printed "ready" (21 steps recorded); if it ended first, its stderr says why."""
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"the traced script ended before step 21 (exit {proc.returncode}); "
                    f"stdout {(line + out)[-500:]!r}; stderr {err[-2000:]!r}")


def _script(tmp_path, body, name="script.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


@pytest.mark.slow  # a whole demo, with its report and animations
def test_demo_stdout_and_exit_code_match_python(tmp_path):
    plain = python_cmd(DEMOS / "linreg.py", cwd=tmp_path)
    traced = gradtrace_cmd("run", str(DEMOS / "linreg.py"), cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0
    assert traced.stdout == plain.stdout
    lines = traced.stderr.splitlines()
    assert all(line.startswith("gradtrace: ") for line in lines), traced.stderr
    assert any("301 steps" in line and "600 zeroings" in line for line in lines)
    assert any(line == "gradtrace: trace saved: gradtrace-out/linreg/trace.gtrace" for line in lines)
    assert "gradtrace: next: gradtrace summary gradtrace-out/linreg/trace.gtrace" in lines
    assert lines[-1] == "gradtrace: report: gradtrace-out/linreg/report.html"  # the page, last
    t = gradtrace.load(tmp_path / "gradtrace-out" / "linreg" / "trace.gtrace")
    assert t.info.status == "completed" and t.info.exit_code is None
    assert len(t.steps) == 301


def test_argv_main_and_path_as_python_sets_them(tmp_path):
    body = """
        import json, os, sys
        print(json.dumps({"argv": sys.argv, "name": __name__, "path0": sys.path[0],
                          "file": __file__, "main": sys.modules["__main__"].__dict__ is globals()}))
    """
    p = _script(tmp_path, body)
    plain = subprocess.run([sys.executable, str(p), "a", "--every", "3", "-o", "x"],
                           capture_output=True, text=True, cwd=tmp_path)
    traced = gradtrace_cmd("run", str(p), "a", "--every", "3", "-o", "x", cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(traced.stdout)["argv"][1:] == ["a", "--every", "3", "-o", "x"]


def test_module_mode(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(textwrap.dedent("""
        import sys, torch
        w = torch.ones(2, requires_grad=True)
        (w * 3).sum().backward()
        print(__name__, sys.argv[1:], w.grad.tolist())
    """))
    r = gradtrace_cmd("run", "-m", "pkg.train", "x", "--flag", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "__main__ ['x', '--flag'] [3.0, 3.0]"
    t = gradtrace.load(tmp_path / "gradtrace-out" / "train" / "trace.gtrace")
    assert [o.name for o in t.steps[0].graph_ops] == ["mul", "sum"]


def test_sys_exit_code_passes_through(tmp_path):
    p = _script(tmp_path, "import sys\nprint('bye')\nsys.exit(3)\n")
    r = gradtrace_cmd("run", "-o", "out.gtrace", str(p), cwd=tmp_path)
    assert r.returncode == 3
    assert r.stdout == "bye\n"
    assert gradtrace.load(tmp_path / "out.gtrace").info.status == "exited"


def test_exception_shows_the_users_traceback_only(tmp_path):
    p = _script(tmp_path, """
        import torch
        def train():
            w = torch.ones(2, requires_grad=True)
            (w * 2).sum().backward()
            raise ValueError("bad batch")
        train()
    """)
    r = gradtrace_cmd("run", "-o", "out.gtrace", str(p), cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr
    assert "Traceback (most recent call last):" in err
    assert f'File "{p}", line 7, in <module>' in err
    assert "ValueError: bad batch" in err
    assert "gradtrace/" not in err.split("ValueError")[0].replace("gradtrace: ", "")
    t = gradtrace.load(tmp_path / "out.gtrace")
    assert t.info.status == "raised" and "bad batch" in t.info.error
    assert len(t.steps) == 1  # the finished step was kept


def test_foreseeable_errors_are_one_line_exit_2(tmp_path):
    r = gradtrace_cmd("run", "missing.py", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "gradtrace: error: no such script: missing.py"
    p = _script(tmp_path, "print('hi')\n")
    (tmp_path / "blocker").write_text("")
    r = gradtrace_cmd("run", "-o", "blocker/run.gtrace", str(p), cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot write the trace file" in r.stderr
    assert r.stdout == ""  # the script did not run
    r = gradtrace_cmd("summary", "nothing.gtrace", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("gradtrace: error: nothing.gtrace: no such file")
    r = gradtrace_cmd("run", "--steps", "5:2", str(p), cwd=tmp_path)
    assert r.returncode == 2 and "step range" in r.stderr


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)])
def test_signals_save_what_was_recorded(tmp_path, sig, code):
    p = _script(tmp_path, LOOP)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "-o", "out.gtrace", str(p)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_ready(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    t = gradtrace.load(tmp_path / "out.gtrace")
    assert t.info.status == "interrupted"
    assert len(t.steps) >= 21
    assert t.steps[20].loss is not None


def test_kill_9_leaves_a_loadable_file(tmp_path):
    p = _script(tmp_path, LOOP)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "-o", "out.gtrace", str(p)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_ready(proc)
    time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=60)
    t = gradtrace.load(tmp_path / "out.gtrace")
    assert t.info.status == "running"  # it never got to say how it ended
    n = len(t.steps)
    assert n >= 21
    assert t.steps.indices == list(range(n))
    last = t.steps[n - 1]
    assert [e.kind for e in last.events] == ["accumulate", "update", "zero"]


def test_plt_show_does_not_block_and_saves_the_figure(tmp_path):
    p = _script(tmp_path, """
        import matplotlib.pyplot as plt
        plt.plot([0, 1], [1, 0])
        plt.show()
        print("after show")
    """)
    env_display = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "-o", "o/trace.gtrace", str(p)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env_display)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "after show\n"
    assert (tmp_path / "o" / "figure-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gradtrace: figure saved: o/figure-1.png" in r.stderr
    assert "non-interactive" not in r.stderr


def test_summary_json(tmp_path):
    p = _script(tmp_path, LOOP.replace("range(100000)", "range(5)").replace('print("ready", flush=True)', "pass"))
    assert gradtrace_cmd("run", "-o", "t.gtrace", str(p), cwd=tmp_path).returncode == 0
    r = gradtrace_cmd("summary", "t.gtrace", "--json", cwd=tmp_path)
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert set(doc) >= {"steps", "totals"}
    assert [s["index"] for s in doc["steps"]] == [0, 1, 2, 3, 4]
    first = doc["steps"][0]
    assert set(first) == {"index", "ops", "backward_nodes", "accumulate_fresh", "accumulate_added",
                          "zeroings", "updates", "loss"}
    assert (first["ops"], first["accumulate_fresh"], first["updates"], first["zeroings"]) == (3, 1, 1, 1)
    assert doc["steps"][1]["accumulate_added"] == 1
    assert doc["totals"]["updates"] == 5
    table = gradtrace_cmd("summary", "t.gtrace", cwd=tmp_path).stdout
    assert "step" in table.splitlines()[1] and "total" in table.splitlines()[-1]


CHDIR = """
import os, torch
import matplotlib.pyplot as plt
os.makedirs("elsewhere", exist_ok=True)
os.chdir("elsewhere")
w = torch.ones(2, requires_grad=True)
for i in range(3):
    (w ** 2).sum().backward()
    with torch.no_grad():
        w -= 0.1 * w.grad
    w.grad = None
plt.plot([1, 2, 3])
plt.show()
print("ok", w.tolist())
"""


def test_a_script_that_changes_directory_keeps_its_outputs_where_asked(tmp_path):
    p = _script(tmp_path, CHDIR)
    r = gradtrace_cmd("run", "--no-animate", "-o", "rel/t.gtrace", str(p), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok [0.5119999647140503, 0.5119999647140503]\n"
    assert "no such file" not in r.stderr and "skipped" not in r.stderr, r.stderr
    said = r.stderr.splitlines()
    # shown from where the run started, as typed
    assert "gradtrace: trace saved: rel/t.gtrace" in said
    assert "gradtrace: figure saved: rel/t.figure-1.png" in said
    assert said[-1] == "gradtrace: report: rel/t.report.html"
    made = sorted(f.name for f in (tmp_path / "rel").iterdir())
    assert made == ["t.figure-1.png", "t.graph.svg", "t.gtrace", "t.report.html"]  # no .lock
    assert len(gradtrace.load(tmp_path / "rel" / "t.gtrace").steps) == 3
    assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing of ours where it went


STDERR = """
import sys, torch
w = torch.ones(2, requires_grad=True)
(w * 3).sum().backward()
print("grad", w.grad.tolist())
if sys.argv[1] == "redirect":
    sys.stderr = sys.stdout
elif sys.argv[1] == "log":
    sys.stderr = open("log.txt", "w")
    print("to the log", file=sys.stderr)
elif sys.argv[1] == "close":
    sys.stderr.close()
"""


@pytest.mark.parametrize("how", ["redirect", "log", "close"])
def test_gradtraces_lines_go_to_the_stderr_it_started_with(tmp_path, how):
    p = _script(tmp_path, STDERR)
    plain = python_cmd(p, how, cwd=tmp_path)
    log = (tmp_path / "log.txt").read_text() if how == "log" else None
    r = gradtrace_cmd("run", "--no-animate", "-o", "t.gtrace", str(p), how, cwd=tmp_path)
    assert r.returncode == plain.returncode == 0, r.stderr  # a closed stderr is no failure
    assert r.stdout == plain.stdout == "grad [3.0, 3.0]\n"  # none of our lines in it
    assert r.stderr == plain.stderr + "".join(
        line + "\n" for line in r.stderr.splitlines() if line.startswith("gradtrace: "))
    said = r.stderr.splitlines()
    assert said[0].startswith("gradtrace: 1 steps, 2 ops")
    assert "gradtrace: trace saved: t.gtrace" in said
    assert said[-1] == "gradtrace: report: t.report.html"
    if how == "log":
        assert (tmp_path / "log.txt").read_text() == log == "to the log\n"


@pytest.mark.slow  # `gradtrace run` in a child process
def test_the_run_line_counts_every_step_and_says_which_were_recorded_in_full(tmp_path):
    """Its counts are the recorded steps': '8459 steps, ... 8459 backward passes' was said of a
    20,000-step run; an interrupted run said one step fewer than its trace keeps."""
    (tmp_path / "s.py").write_text(
        "import torch, sys\n"
        "w = torch.ones(2, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)\n"
        "for i in range(int(sys.argv[1])):\n"
        "    l = (w ** 2).sum(); opt.zero_grad(); l.backward(); opt.step()\n"
        "if sys.argv[2:]: raise KeyboardInterrupt\n")
    r = gradtrace_cmd("run", "--budget", "8KB", "--no-animate", "--no-report", "-o", "a.gtrace",
                      "s.py", "300", cwd=tmp_path)
    kept = len(gradtrace.load(tmp_path / "a.gtrace").steps)
    assert 0 < kept < 300
    assert f"gradtrace: 300 steps; in the {kept} recorded in full, " in r.stderr, r.stderr
    r = gradtrace_cmd("run", "--no-animate", "--no-report", "-o", "b.gtrace", "s.py", "4", "stop",
                      cwd=tmp_path)
    assert r.returncode == -2  # died by SIGINT, as python does
    assert len(gradtrace.load(tmp_path / "b.gtrace").steps) == 4
    assert "gradtrace: 4 steps, 8 ops, 4 backward passes" in r.stderr, r.stderr
