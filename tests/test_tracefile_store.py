"""The trace file: versioned, safe to load, one-line errors for anything that is not a trace."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from gradtrace.tracefile.store import APPLICATION_ID, FORMAT_VERSION


@pytest.fixture
def trace_file(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path):
        for _ in range(20):
            (X @ w).pow(2).mean().backward()
            with torch.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    return path


def _one_line_error(path, *fragments):
    with pytest.raises(TraceFileError) as info:
        t = gradtrace.load(path)
        t.steps[len(t.steps) - 1]  # reading a step must fail the same way
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for frag in fragments:
        assert frag in msg
    return msg


def test_loads_with_header_and_version(trace_file):
    t = gradtrace.load(trace_file)
    assert t.info.format_version == FORMAT_VERSION
    assert t.info.status == "completed"
    conn = sqlite3.connect(trace_file)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.gtrace", "no such file", "gradtrace run")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gtrace"
    p.write_bytes(b"")
    _one_line_error(p, "empty")


def test_foreign_text_file(tmp_path):
    p = tmp_path / "notes.gtrace"
    p.write_text("import os; os.system('echo pwned')\n")
    _one_line_error(p, "not a gradtrace trace file")


def test_foreign_sqlite_database(tmp_path):
    p = tmp_path / "other.db"
    c = sqlite3.connect(p)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    _one_line_error(p, "not a gradtrace trace file")


def test_newer_format(trace_file):
    c = sqlite3.connect(trace_file)
    c.execute(f"PRAGMA user_version={FORMAT_VERSION + 1}")
    c.commit()
    c.close()
    _one_line_error(trace_file, f"format {FORMAT_VERSION + 1}", "newer gradtrace", "upgrade")


def test_older_incompatible_format(trace_file):
    c = sqlite3.connect(trace_file)
    c.execute("PRAGMA user_version=0")
    c.commit()
    c.close()
    _one_line_error(trace_file, "format 0 is older")


def test_truncated_file(trace_file):
    data = trace_file.read_bytes()
    trace_file.write_bytes(data[: len(data) // 2])
    _one_line_error(trace_file, "record the run again")


def test_corrupted_pages(trace_file):
    data = bytearray(trace_file.read_bytes())
    for i in range(4096, len(data) - 1, 997):
        data[i] ^= 0x5A
    trace_file.write_bytes(bytes(data))
    _one_line_error(trace_file, "corrupt")


def test_corrupted_step_body(trace_file):
    c = sqlite3.connect(trace_file)
    c.execute("UPDATE step SET body='{\"ops\": [[1, 2' WHERE idx=3")
    c.commit()
    c.close()
    t = gradtrace.load(trace_file)
    t.steps[0]
    with pytest.raises(TraceFileError, match="step 3 is corrupt"):
        t.steps[3]


def test_a_directory(tmp_path):
    _one_line_error(tmp_path, "is a directory")


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


def test_format_1_files_are_still_read():
    t = gradtrace.load(Path(__file__).parent / "data" / "format1.gtrace")
    assert t.info.format_version == 1 and len(t.steps) == 2
    s = t.steps[1]
    assert [(o.name, [t.name(i) for i in o.inputs]) for o in s.ops] == [
        ("matmul", ["X", "w"]), ("sub", ["t7", "y"]), ("pow", ["t8"]), ("mean", ["t9"])]
    assert [(e.kind, e.idiom) for e in s.events] == [
        ("accumulate", "added onto zeros"), ("update", "p.sub_() (no_grad)"),
        ("zero", "p.grad.zero_()")]
    assert s.events[-1].after.data.tolist() == [[0.0], [0.0]]
    assert t.find("w").shape == (2, 1) and t.find("w").role == "param"
    assert abs(s.backward.loss - 1.9820879697799683) < 1e-6


# -- files from strangers: the reader checks before it builds (see tests/hostile.py too) ----
def _vidx_of(path, step=0):
    import struct

    c = sqlite3.connect(path)
    (blob,) = c.execute("SELECT vidx FROM step WHERE idx=?", (step,)).fetchone()
    c.close()
    return list(struct.unpack(f"<{len(blob) // 8}q", blob))


def _set_vidx(path, ints, step=0):
    import struct

    c = sqlite3.connect(path)
    c.execute("UPDATE step SET vidx=? WHERE idx=?", (struct.pack(f"<{len(ints)}q", *ints), step))
    c.commit()
    c.close()


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    p = tmp_path / "pipe.gtrace"
    os.mkfifo(p)
    _one_line_error(p, "not a regular file")


def test_a_billion_zeros_are_statistics_not_memory(trace_file):
    import json

    from gradtrace.tracefile.checked import Limits, parse_values

    # A cleared gradient (kind 2, no bytes) claiming 10^9 float32 elements.
    _set_vidx(trace_file, _vidx_of(trace_file) + [10 ** 6, -1, 2, 0, 0, 0, 1, 10 ** 9])
    gradtrace.load(trace_file).steps[0]  # the whole step reads
    c = sqlite3.connect(trace_file)
    body, blob = c.execute("SELECT body, vals FROM step WHERE idx=0").fetchone()
    c.close()
    vals, _, built = parse_values(_vidx_of(trace_file), blob, json.loads(body), Limits(), "step 0")
    v = vals[10 ** 6]
    assert v.data is None and v.stats.numel == 10 ** 9 and v.stats.norm == 0.0
    assert built < 1 << 20


def test_small_zeros_are_still_tensors(trace_file):
    t = gradtrace.load(trace_file)
    zeros = [e.before for s in t.steps for e in s.events
             if e.kind == "accumulate" and e.before is not None and e.before.data is not None]
    assert zeros and all(float(v.data.abs().sum()) == 0 for v in zeros)


@pytest.mark.parametrize("change, fragment", [
    (lambda ints: ints[:-2], "cut short"),
    (lambda ints: ints[:6] + [-1] + ints[7:], "dimensions"),
    (lambda ints: ints[:6] + [10 ** 12] + ints[7:], "dimensions"),
    (lambda ints: ints + [10 ** 6, -1, 2, 0, 0, 0, 3, 10 ** 9, 10 ** 9, 10 ** 9], "more than the limit"),
    (lambda ints: ints + [10 ** 6, -1, 0, 0, 0, 4 * 10 ** 9, 1, 10 ** 9], "bytes"),
    (lambda ints: ints + [10 ** 6, -1, 7, 0, 0, 0, 0], "unknown kind"),
    (lambda ints: ints + [10 ** 6, -1, 0, 99, 0, 0, 0], "unknown dtype"),
    (lambda ints: ints + ints[:7 + ints[6]], "twice"),
])
def test_value_index_lies_are_one_line(trace_file, change, fragment):
    _set_vidx(trace_file, change(_vidx_of(trace_file)))
    msg = _one_line_error_step(trace_file, 0)
    assert "step 0 is corrupt" in msg and fragment in msg


def _one_line_error_step(path, idx):
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as info:
        t.step(idx)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


def test_a_graph_that_loops_is_refused(trace_file):
    import json

    c = sqlite3.connect(trace_file)
    (text,) = c.execute("SELECT body FROM step WHERE idx=0").fetchone()
    body = json.loads(text)
    body["nodes"][-1][4] = [0]  # the last node points back at the root
    c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(body),))
    c.commit()
    c.close()
    assert "must not loop" in _one_line_error_step(trace_file, 0)


def test_recorded_graphs_number_nodes_topologically(trace_file):
    """The invariant the loop check relies on: every edge goes to a later node."""
    t = gradtrace.load(trace_file)
    for s in t.steps:
        for n in s.backward.nodes:
            assert all(x is None or x > n.nid for x in n.next)


def test_a_generated_column_is_refused(trace_file):
    c = sqlite3.connect(trace_file)
    c.execute("ALTER TABLE tensor ADD COLUMN big BLOB GENERATED ALWAYS AS (zeroblob(100)) VIRTUAL")
    c.commit()
    c.close()
    _one_line_error(trace_file, "does not have the columns")


@pytest.mark.parametrize("folder", ["proj#1", "a?b", "x%20y", "with space", "données-训练"])
def test_paths_are_paths(tmp_path, trace_file, folder):
    import shutil

    d = tmp_path / folder
    d.mkdir()
    p = d / f"run#{folder}?.gtrace"
    shutil.copyfile(trace_file, p)
    t = gradtrace.load(p)
    assert len(t.steps) == 20 and t.path == str(p)
    assert not (tmp_path / "proj").exists() and sorted(x.name for x in d.iterdir()) == [p.name]


@pytest.mark.slow  # `gradtrace` commands in a real shell
def test_readers_on_odd_paths_in_a_real_shell(tmp_path, trace_file):
    from conftest import gradtrace_cmd

    d = tmp_path / "proj#1 ?%20 é"
    d.mkdir()
    p = d / "run#3.gtrace"
    import shutil

    shutil.copyfile(trace_file, p)
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
