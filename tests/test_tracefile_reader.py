"""The Trace facade (gradtrace/tracefile/reader.py): its tables, steps by number, selection, one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import gradtrace
from gradtrace.errors import NotRecordedError, TraceFileError, UsageError
from gradtrace.tracefile.reader import Trace
from gradtrace.tracefile.rows import StepHead
from gradtrace.tracefile.store import TraceWriter


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

