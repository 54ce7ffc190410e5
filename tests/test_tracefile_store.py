"""The trace writer (gradtrace/tracefile/store.py): a failed write keeps the run going, steps written
once their work is done, provisional rows; loading is tested in test_tracefile_opening.py."""

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


def test_a_step_written_provisionally_then_ended_is_the_same_bytes(tmp_path, monkeypatch):
    """A step is written when its update is done (a kill -9 keeps it) and again when rows
    arrive after that (the zeroing of b's gradient here); the second write encodes only the
    rows added since. The file is the one encoding every row each time writes."""
    from gradtrace.tracefile import store

    def record(path):
        torch.manual_seed(0)
        w, b = torch.randn(3, 1, requires_grad=True), torch.zeros(1, requires_grad=True)
        X = torch.randn(8, 3)
        with gradtrace.trace(path, full=True):
            for _ in range(6):
                (X @ w + b).pow(2).mean().backward()
                with torch.no_grad():
                    for p in (w, b):
                        p -= 0.1 * p.grad
                        p.grad.zero_()  # w's zeroing writes the step; b's is added after
        return sqlite3.connect(path).execute("SELECT * FROM step ORDER BY idx").fetchall()

    calls = []
    encode = store.TraceWriter._encode
    monkeypatch.setattr(store.TraceWriter, "_encode",
                        lambda self, key, rows: calls.append(self._encoded.get(key, (0,))[0])
                        or encode(self, key, rows))
    incremental = record(tmp_path / "a.gtrace")
    assert any(calls), "no step was written twice: the test no longer covers the re-write"
    monkeypatch.setattr(store.TraceWriter, "_encode", lambda self, key, rows: store._json(rows))
    whole = record(tmp_path / "b.gtrace")
    assert len(whole) == 6 and incremental == whole
    events = [len(json.loads(r[-3])["events"]) for r in whole]  # the body column
    assert min(events) >= 4  # each step has both updates and both zeroings


@pytest.mark.parametrize("window", [60.0, 0.0])
def test_a_provisional_row_is_written_only_when_a_commit_comes_before_the_final_one(
        tmp_path, monkeypatch, window):
    """optimizer.step() writes its step provisionally (kill -9 keeps it) and the next
    zero_grad() adds rows to it. The provisional row is held until a commit: with no commit
    in between (a long window) each step's row is written once; with a commit at every write
    (window 0) the provisional row goes in first and is replaced. Same file either way."""
    from gradtrace.tracefile import store

    statements = []
    init = store.TraceWriter.__init__

    def traced_init(self, path, meta, **_):
        init(self, path, meta, window=window)
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
    inserts = sum(s.startswith("INSERT OR REPLACE INTO step") for s in statements)
    assert inserts == (5 if window else 9), inserts  # window 0: steps 0-3 twice, step 4 once
    t = gradtrace.load(path)
    assert t.steps.indices == [0, 1, 2, 3, 4]
    for s in t.steps[:4]:
        assert [e.kind for e in s.events][-2:] == ["zero", "zero"]  # the next zero_grad's
    t.close()
