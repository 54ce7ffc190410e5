"""The trace file: versioned, safe to load, one-line errors for anything that is not a trace."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from gradtrace.trace.store import APPLICATION_ID, FORMAT_VERSION


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
        if sql == "BEGIN":
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_write_that_fails_does_not_stop_the_run_and_is_reported(tmp_path):
    done = []
    with pytest.raises(TraceFileError) as info:
        with gradtrace.trace(tmp_path / "run.gtrace") as t:
            _train(3)
            t._writer.conn = _FullDisk(t._writer.conn)
            _train(3)
            done.append(True)
    assert done == [True]  # the user's code ran to its end
    msg = str(info.value)
    assert "\n" not in msg and "could not be written to the end (database or disk is full)" in msg
    kept = gradtrace.load(tmp_path / "run.gtrace")
    # Steps 0 and 1 were written; step 2 ends at step 3's first op, after the disk filled up.
    assert len(kept.steps) == 2 and kept.info.status == "running"


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
