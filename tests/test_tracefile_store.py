"""The trace writer (gradtrace/tracefile/store.py): a failed write keeps the run going, steps written
once their work is done, marked steps; loading is tested in test_tracefile_opening.py."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TraceFileError, match="cannot write the trace file"):
        with gradtrace.trace(blocker / "sub" / "run.gtrace"):
            pass


def _train(steps):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    for _ in range(steps):
        (X @ w).pow(2).mean().backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()


class _FullDisk:
    """A connection whose writes fail as on a full disk."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql, *args):
        if sql.split()[0] in ("BEGIN", "COMMIT", "INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_write_that_fails_does_not_stop_the_run_and_is_reported(tmp_path):
    done = []
    with pytest.raises(TraceFileError) as info:
        with gradtrace.trace(tmp_path / "run.gtrace") as t:
            _train(3)
            t._writer.sync()  # what the committer thread does once the window has passed
            t._writer.conn = _FullDisk(t._writer.conn)
            _train(3)
            done.append(True)
    assert done == [True]  # the user's code ran to its end
    msg = str(info.value)
    assert "\n" not in msg and "could not be written to the end (database or disk is full)" in msg
    kept = gradtrace.load(tmp_path / "run.gtrace")
    # Steps 0..2 were written: step 2 as soon as its update was done and its .grad zeroed
    # (a step is durable once its work is done), before the disk filled up.
    assert len(kept.steps) == 3 and kept.info.status == "running"
    assert [e.kind for e in kept.steps[2].events] == ["accumulate", "update", "zero"]


def test_recorded_graphs_number_nodes_topologically(twenty_step_file):
    """The invariant the loop check relies on: every edge goes to a later node."""
    t = gradtrace.load(twenty_step_file)
    for s in t.steps:
        for n in s.backward.nodes:
            assert all(x is None or x > n.nid for x in n.next)


@pytest.mark.slow  # `gradtrace` commands in a real shell
def test_readers_on_odd_paths_in_a_real_shell(tmp_path, twenty_step_file):
    from conftest import gradtrace_cmd

    d = tmp_path / "proj#1 ?%20 é"
    d.mkdir()
    p = d / "run#3.gtrace"
    import shutil

    shutil.copyfile(twenty_step_file, p)
    for args in (["summary", str(p)], ["check", str(p)], ["graph", str(p), "-o", str(d / "g#.dot")],
                 ["animate", str(p), "--kind", "training", "--dpi", "20", "-o", str(d / "t?.png")],
                 ["report", str(p), "--no-animations", "-o", str(d / "r%20.html")]):
        r = gradtrace_cmd(*args)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    assert (d / "g#.dot").read_text().startswith("digraph")
    assert (d / "t?.png").stat().st_size > 0 and "run#3" in (d / "r%20.html").read_text()


def _record_zeroing_twice(path):
    """Six steps whose updates and zeroings come one parameter after the other: w's zeroing
    marks the step done (record/recorder.py), b's update and zeroing come after the mark."""
    torch.manual_seed(0)
    w, b = torch.randn(3, 1, requires_grad=True), torch.zeros(1, requires_grad=True)
    X = torch.randn(8, 3)
    with gradtrace.trace(path, full=True):
        for _ in range(6):
            (X @ w + b).pow(2).mean().backward()
            with torch.no_grad():
                for p in (w, b):
                    p -= 0.1 * p.grad
                    p.grad.zero_()
    return sqlite3.connect(path).execute("SELECT * FROM step ORDER BY idx").fetchall()


def test_a_step_written_while_marked_then_ended_is_the_same_file(tmp_path, monkeypatch):
    """A commit that comes while a step is marked writes it as it stood then (kill -9 keeps
    it); its final row replaces that one. The file is the one a run writing each step once
    leaves."""
    from gradtrace.tracefile import store

    once = _record_zeroing_twice(tmp_path / "a.gtrace")
    marked_rows = []
    mark, marked_row = store.TraceWriter.mark_step, store.TraceWriter._marked_row
    monkeypatch.setattr(store.TraceWriter, "_marked_row",
                        lambda self: marked_rows.append(1) or marked_row(self))
    # a commit at every mark: what the committer does when the run stops there for a while
    monkeypatch.setattr(store.TraceWriter, "mark_step",
                        lambda self, head: (mark(self, head), self.sync()))
    twice = _record_zeroing_twice(tmp_path / "b.gtrace")
    assert len(marked_rows) == 6, "no step was written while marked: the test covers nothing"
    assert len(once) == 6 and twice == once
    events = [len(json.loads(r[-3])["events"]) for r in once]  # the body column
    assert min(events) >= 4  # each step has both updates and both zeroings


def test_a_marked_step_is_written_as_it_stood_when_marked():
    """Rows added after the mark are not in what a commit writes of a marked step (they may
    be added by the recording thread while the committer thread writes it); the final row
    has them all."""
    from gradtrace.tracefile.rows import EventRow, StepHead
    from gradtrace.tracefile.store import TraceWriter

    w = TraceWriter(None, {})

    def event(seq):
        w.add_event(EventRow(seq, "zero", 0, "p.grad.zero_()", None, None, None, None, None, 0,
                             None, None, 0))

    def body():
        (text,) = w.conn.execute("SELECT body FROM step WHERE idx=0").fetchone()
        return [e[0] for e in json.loads(text)["events"]]

    event(1)
    w.add_bytes(0, None, (2,), "float32", bytes(8))
    w.mark_step(StepHead(0, 1, 1, 1, 2.0, 0, 0, 0, 0, 0, 1, 0, 0, 0))
    event(2)
    w.add_bytes(1, None, (1,), "float32", bytes(4))
    w.sync()
    assert body() == [1]
    (vidx, vals), = w.conn.execute("SELECT vidx, vals FROM step WHERE idx=0").fetchall()
    assert len(vals) == 8 and len(vidx) == 8 * 8  # one value: 7 ints and its one size
    w.commit_step(StepHead(0, 1, 2, 1, 2.0, 0, 0, 0, 0, 0, 2, 0, 0, 0))
    w.sync()
    assert body() == [1, 2]
    assert w.conn.execute("SELECT COUNT(*) FROM step").fetchone() == (1,)


def test_each_steps_row_is_written_once_when_no_commit_comes_in_between(tmp_path, monkeypatch):
    """optimizer.step() marks its step (kill -9 keeps it once a commit comes) and the next
    zero_grad() adds rows to it; with a long window no commit comes in between, and each
    step's row is written once."""
    from gradtrace.tracefile import store

    statements = []
    init = store.TraceWriter.__init__

    def traced_init(self, path, meta, **_):
        init(self, path, meta, window=60.0)
        self.conn.set_trace_callback(statements.append)

    monkeypatch.setattr(store.TraceWriter, "__init__", traced_init)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X = torch.randn(8, 3)
    path = tmp_path / "t.gtrace"
    with gradtrace.trace(path, full=True):
        for _ in range(5):
            opt.zero_grad()
            net(X).pow(2).mean().backward()
            opt.step()
    assert sum(s.startswith("INSERT OR REPLACE INTO step") for s in statements) == 5
    t = gradtrace.load(path)
    assert t.steps.indices == [0, 1, 2, 3, 4]
    for s in t.steps[:4]:
        assert [e.kind for e in s.events][-2:] == ["zero", "zero"]  # the next zero_grad's
    t.close()
