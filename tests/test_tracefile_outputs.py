"""One run, one set of outputs: the trace lock, outputs named after their trace, a file that is
not a trace never overwritten, and faults (a full disk, an unwritable folder, odd characters
in paths) that never change the script's exit code. Real subprocesses, as a user runs them."""

from __future__ import annotations

import base64
import io
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import gradtrace
from conftest import gradtrace_cmd
from gradtrace.errors import RenderError, TraceFileError
from gradtrace.tracefile.outputs import outputs_of
from gradtrace.tracefile.store import is_trace

FIT = textwrap.dedent("""\
    import torch
    torch.manual_seed(0)
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    w = torch.zeros(3, 1, requires_grad=True)
    for i in range(5):
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
    print("loss", round(loss.item(), 4))
    """)


def _gradtrace_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("gradtrace: ") for line in lines), stderr
    return lines


# -- one run per trace -------------------------------------------------------------------------

@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_a_second_run_on_the_same_trace_stops_at_once(tmp_path):
    (tmp_path / "wait.py").write_text(textwrap.dedent("""\
        import os, time, torch
        w = torch.ones(2, requires_grad=True)
        (w * 3).sum().backward()
        print("started", flush=True)
        while not os.path.exists("go"):
            time.sleep(0.02)
        (w * 2).sum().backward()
        print("finished")
        """))
    (tmp_path / "fit.py").write_text(FIT)
    env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    first = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "--no-animate", "-o",
                              "runs/a.gtrace", "wait.py"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "started\n"
        trace = tmp_path / "runs" / "a.gtrace"
        before = trace.stat().st_ino
        second = gradtrace_cmd("run", "-o", "runs/a.gtrace", "fit.py", cwd=tmp_path)
        assert second.returncode == 2
        assert second.stdout == ""  # its script never started
        assert second.stderr.count("\n") == 1 and second.stderr.startswith(
            "gradtrace: error: runs/a.gtrace: another gradtrace run (pid ")
        assert "is writing this trace; wait for it to end or choose another path with -o" in \
            second.stderr
        assert trace.stat().st_ino == before  # nothing of the first run was touched
        (tmp_path / "go").write_text("")
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert out == "finished\n"
    assert "gradtrace: trace saved: runs/a.gtrace" in err.splitlines()
    t = gradtrace.load(trace)
    assert t.info.status == "completed" and len(t.steps) == 2
    assert not (tmp_path / "runs" / "a.gtrace.lock").exists()  # the lock file goes at the end


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path):
    (tmp_path / "fit.py").write_text(FIT)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.gtrace.lock").write_text("gradtrace run pid 999999\n")
    r = gradtrace_cmd("run", "--no-animate", "--no-report", "-o", "runs/a.gtrace", "fit.py",
                      cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "runs" / "a.gtrace.lock").exists()


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_a_run_that_stops_before_its_script_leaves_nothing(tmp_path):
    r = gradtrace_cmd("run", "-o", "new/folder/x.gtrace", "missing.py", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == "gradtrace: error: no such script: missing.py\n"
    assert list(tmp_path.iterdir()) == []  # not even the folder made for the lock


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_a_file_that_is_not_a_trace_is_never_overwritten(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(FIT)
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.close()
    for target, keep in (("train.py", script), ("other.db", db)):
        before = keep.read_bytes()
        r = gradtrace_cmd("run", "-o", target, "train.py", cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr == (f"gradtrace: error: {target}: exists and is not a gradtrace trace; "
                            "choose another path with -o\n")
        assert keep.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "train.py"]


# -- outputs named after their trace --------------------------------------------------------------

def test_naming_rule():
    o = outputs_of(Path("gradtrace-out/fit/trace.gtrace"))
    assert [o.graph.name, o.animation("backprop").name, o.animation("training").name,
            o.figure(1).name, o.report.name] == \
        ["graph.svg", "backprop.gif", "training.gif", "figure-1.png", "report.html"]
    o = outputs_of("runs/a.gtrace")
    assert [str(p) for p in (o.graph, o.animation("backprop"), o.animation("training"),
                             o.figure(1), o.report)] == \
        ["runs/a.graph.svg", "runs/a.backprop.gif", "runs/a.training.gif", "runs/a.figure-1.png",
         "runs/a.report.html"]


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_traces_sharing_a_folder_have_their_own_outputs(tmp_path):
    (tmp_path / "fit.py").write_text(FIT)
    runs = tmp_path / "runs"

    r = gradtrace_cmd("run", "--animate", "-o", "runs/trace.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    gifs = {kind: (runs / f"{kind}.gif").read_bytes() for kind in ("backprop", "training")}
    assert base64.b64encode(gifs["backprop"]).decode() in (runs / "report.html").read_text()

    r = gradtrace_cmd("run", "--no-animate", "-o", "runs/a.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = _gradtrace_lines(r.stderr)
    assert "gradtrace: graph of step 0: runs/a.graph.svg" in lines
    assert lines[-1] == "gradtrace: report: runs/a.report.html"
    page = (runs / "a.report.html").read_text()
    assert "data:image/gif" not in page  # the other trace's GIFs are not a's
    assert not any(base64.b64encode(g).decode() in page for g in gifs.values())

    r = gradtrace_cmd("run", "--no-animate", "-o", "runs/b.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in runs.iterdir()) == [
        "a.graph.svg", "a.gtrace", "a.report.html", "b.graph.svg", "b.gtrace", "b.report.html",
        "backprop.gif", "graph.svg", "report.html", "trace.gtrace", "training.gif"]

    # The same trace again, without animations: the earlier run's GIFs go, none is reused.
    r = gradtrace_cmd("run", "--no-animate", "-o", "runs/trace.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (runs / "backprop.gif").exists() and not (runs / "training.gif").exists()
    assert "data:image/gif" not in (runs / "report.html").read_text()
    assert (runs / "a.report.html").read_text() == page  # another trace's outputs stay

    r = gradtrace_cmd("report", "runs/a.gtrace", "--no-animations", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr.splitlines()[-1] == "gradtrace: report: runs/a.report.html"


def test_report_reuses_only_this_traces_current_files(tmp_path):
    from gradtrace.render.report import build_report

    with gradtrace.trace(tmp_path / "a.gtrace"):
        exec(FIT, {})
    trace = gradtrace.load(tmp_path / "a.gtrace")
    o = outputs_of(trace.path)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="GIF")
    gif = buf.getvalue()
    stamp = base64.b64encode(gif).decode()
    o.animation("backprop").write_bytes(gif)
    (tmp_path / "backprop.gif").write_bytes(gif)    # another trace's (trace.gtrace) name
    old = o.trace.stat().st_mtime - 60
    os.utime(o.animation("backprop"), (old, old))    # made before this trace: stale
    o.figure(1).write_bytes(b"\x89PNG\r\n\x1a\n")
    os.utime(o.figure(1), (old, old))                 # shown by an earlier run
    page = build_report(trace, o.report, render_missing=False).read_text()
    assert stamp not in page and "The script's figures" not in page
    os.utime(o.animation("backprop"), None)
    os.utime(o.figure(1), None)
    page = build_report(trace, o.report, render_missing=False).read_text()
    assert stamp in page and "The script's figures" in page


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_figures_are_named_after_the_trace(tmp_path):
    p = tmp_path / "plot.py"
    p.write_text("import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\nprint('shown')\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    r = subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-animate", "-o",
                        "o/a.gtrace", str(p)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "shown\n"
    assert "gradtrace: figure saved: o/a.figure-1.png" in r.stderr.splitlines()
    assert (tmp_path / "o" / "a.figure-1.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "o" / "figure-1.png").exists()
    assert "The script's figures" in (tmp_path / "o" / "a.report.html").read_text()


# -- faults keep the script's exit code ------------------------------------------------------------

def _mount(where: Path, options: str) -> bool:
    """Mount a tmpfs at ``where`` if this process may (root in a container may or may not)."""
    where.mkdir(parents=True, exist_ok=True)
    if os.name != "posix" or shutil.which("mount") is None or os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.fixture
def tmpfs():
    """tmpfs(path, options) -> whether a tmpfs is mounted there; unmounted at the end."""
    mounted = []

    def mount(where: Path, options: str) -> bool:
        if _mount(where, options):
            mounted.append(where)
            return True
        return False

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


FILLS = textwrap.dedent("""\
    import time
    import torch
    torch.manual_seed(0)
    X, y = torch.randn(128, 16), torch.randn(128, 1)
    w = torch.zeros(16, 1, requires_grad=True)
    for i in range(400):
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.01 * w.grad
            w.grad.zero_()
        if i % 4 == 3 and i < 80:
            time.sleep(0.25)  # a pause longer than the commit window: the steps so far commit
    print("done", round(loss.item(), 4))
    """)

#: Only where no small disk can be mounted: `gradtrace run` with the trace writer's
#: connection failing as on a full disk from step 30 on (a test stand-in, never shipped).
_FULL_FROM_STEP_30 = textwrap.dedent("""\
    import sqlite3, sys
    from gradtrace.tracefile import store

    class Full:
        def __init__(self, conn):
            self.conn = conn
        def execute(self, sql, *args):
            if sql == "BEGIN":
                raise sqlite3.OperationalError("database or disk is full")
            return self.conn.execute(sql, *args)
        def __getattr__(self, name):
            return getattr(self.conn, name)

    commit = store.TraceWriter.commit_step
    def commit_step(self, head):
        if head[0] >= 30 and not isinstance(self.conn, Full):
            self.conn = Full(self.conn)
        commit(self, head)
    store.TraceWriter.commit_step = commit_step
    from gradtrace.cli import main
    main(sys.argv[1:])
    """)


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_a_full_disk_keeps_the_exit_code_the_output_and_the_steps(tmp_path, tmpfs):
    (tmp_path / "fills.py").write_text(FILLS)
    plain = subprocess.run([sys.executable, "fills.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == 0
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    real_disk = tmpfs(tmp_path / "disk", "size=600k")
    cmd = [sys.executable, "-m", "gradtrace"] if real_disk else \
        [sys.executable, "-c", _FULL_FROM_STEP_30]
    r = subprocess.run([*cmd, "run", "--no-animate", "-o", "disk/a.gtrace", "fills.py"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr  # the script's, as without gradtrace
    assert r.stdout == plain.stdout
    lines = _gradtrace_lines(r.stderr)
    assert "Traceback" not in r.stderr and "database is locked" not in r.stderr
    [error] = [line for line in lines if line.startswith("gradtrace: error: ")]
    assert error.startswith("gradtrace: error: disk/a.gtrace: could not be written to the end "
                            "(database or disk is full); writing stopped at step ")
    kept = int(error.split("writing stopped at step ")[1].split(":")[0])
    assert 0 < kept < 400
    assert f"the {kept} recorded steps before it (0..{kept - 1}) are kept in the file" in error
    assert error.endswith("; free some space or choose another path with -o")
    assert "trace saved" not in r.stderr
    # Readable in place, on the disk that is still full.
    t = gradtrace.load(tmp_path / "disk" / "a.gtrace")
    assert t.steps.indices == list(range(kept))
    assert t.steps[kept - 1].backward is not None
    if real_disk:
        # The space left once the last transaction failed depends on how much it held (group
        # commit): each output either fitted and is whole, or is absent and said so. Never
        # half a file.
        names = sorted(os.listdir(tmp_path / "disk"))
        assert set(names) <= {"a.gtrace", "a.graph.svg", "a.report.html"}, names
        if "a.graph.svg" in names:
            assert (tmp_path / "disk" / "a.graph.svg").read_text().rstrip().endswith("</svg>")
        else:
            # named by its absolute path, taken before the script ran (it may os.chdir)
            assert f"gradtrace: graph skipped: cannot write {tmp_path}/disk/a.graph.svg: No space " \
                "left on device" in lines
        if "a.report.html" in names:
            assert (tmp_path / "disk" / "a.report.html").read_text().rstrip().endswith("</html>")
        else:
            assert any(line.startswith(f"gradtrace: report skipped: cannot write {tmp_path}/disk/"
                                       "a.report.html")
                       for line in lines)
            assert lines[-1].startswith("gradtrace: report skipped")
        assert t.info.status == "completed"  # the end fitted once the journal had gone


def test_an_animation_that_cannot_be_written_is_one_render_error(tmp_path):
    with gradtrace.trace() as t:
        exec(FIT, {})
    (tmp_path / "file").write_text("")
    with pytest.raises(RenderError) as e:
        t.animate(kind="training", frames=2, progress=False).save(tmp_path / "file" / "x.gif")
    assert "\n" not in str(e.value) and str(e.value).startswith(f"cannot write {tmp_path}")


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_an_unwritable_output_folder_stops_before_the_script(tmp_path, tmpfs):
    (tmp_path / "fit.py").write_text(FIT)
    (tmp_path / "a-file").write_text("")
    targets = ["a-file/x.gtrace"]
    if tmpfs(tmp_path / "ro", "size=64k,ro"):
        targets.append("ro/x.gtrace")
    for target in targets:
        r = gradtrace_cmd("run", "-o", target, "fit.py", cwd=tmp_path)
        assert r.returncode == 1 and r.stdout == ""  # the script did not run
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(
            f"gradtrace: error: {target}: cannot write the trace file (")
        assert r.stderr.endswith("); choose another path with -o\n")


@pytest.mark.slow  # `gradtrace run` in real or forked processes
def test_odd_characters_in_paths(tmp_path):
    folder = tmp_path / "proj#1 ?%20 é"
    folder.mkdir()
    (folder / "fit.py").write_text(FIT)
    target = "out#2/run%41?.gtrace"
    r = gradtrace_cmd("run", "--no-animate", "-o", target, "fit.py", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("loss ")
    _gradtrace_lines(r.stderr)
    assert "Traceback" not in r.stderr
    path = folder / target
    assert is_trace(path)  # the writer's side: the file is there, whole
    try:
        t = gradtrace.load(path)
    except TraceFileError:
        # Reading such a path back needs load() to percent-encode its SQLite URI (that fix
        # is made in store.load); until it is in, the run says so on one line, as above.
        pytest.xfail("gradtrace.load cannot open a path with # ? or % yet")
    assert len(t.steps) == 5 and t.info.status == "completed"
    assert "gradtrace: error" not in r.stderr
    # printed for pasting into a shell: quoted (issue 17)
    assert f"gradtrace: trace saved: {shlex.quote(target)}" in r.stderr.splitlines()
    assert (folder / "out#2" / "run%41?.report.html").read_text().startswith("<!DOCTYPE html>")
    assert (folder / "out#2" / "run%41?.graph.svg").is_file()


