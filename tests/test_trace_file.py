"""The trace file: versioned, safe to load, one-line errors for anything that is not a trace."""

from __future__ import annotations

import sqlite3

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
