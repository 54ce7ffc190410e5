"""tracefile/scalars.py, trace.scalars(): every step's loss and norms as numpy columns, checked on the way in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError


def _record(path, steps=6, **options):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    X = torch.randn(8, 3)
    with gradtrace.trace(path, **options):
        for _ in range(steps):
            ((X @ w + b) ** 2).mean().backward()
            with torch.no_grad():
                for p in (w, b):
                    p -= 0.1 * p.grad
                    p.grad.zero_()
    return gradtrace.load(path)


def test_columns_match_what_the_steps_recorded(tmp_path):
    t = _record(tmp_path / "t.gtrace")
    sc = t.scalars()
    assert len(sc) == 6 and sc.full.all() and sc.has_norms
    assert set(sc.names) == {"w", "b"}
    for s in t.steps:
        assert sc.loss[s.index] == pytest.approx(s.backward.loss)
        for e in s.events:
            col = sc.column(t.name(e.tensor))
            if e.kind == "accumulate":
                assert sc.accumulation_kind(s.index, col) == e.accumulation
                assert sc.grad_norm[s.index, col] == pytest.approx(float(e.after.data.norm()), rel=1e-6)
            elif e.kind == "update":
                assert sc.update_norm[s.index, col] == pytest.approx(
                    float((e.after.data - e.before.data).norm()), rel=1e-5)
    counts = sc.counts()
    assert counts["fresh"].tolist() == [2, 0, 0, 0, 0, 0]
    assert counts["zeros"].tolist() == [0, 2, 2, 2, 2, 2] and counts["updated"].tolist() == [2] * 6
    with pytest.raises(KeyError, match="no parameter named 'v'"):
        sc.column("v")


def _damage(path, sql, *args):
    c = sqlite3.connect(path)
    c.execute(sql, args)
    c.commit()
    c.close()


@pytest.mark.parametrize("sql, args, fragment", [
    ("UPDATE scalars SET vals=? WHERE idx=2", (b"\x00" * 12,), "do not match"),
    ("UPDATE scalars SET acc=? WHERE idx=2", (b"\x07\x07",), "code out of range"),
    ("UPDATE scalars SET full=5 WHERE idx=1", (), "not what gradtrace writes"),
    ("UPDATE scalar_param SET col=7 WHERE col=1", (), "scalar_param table's column 1"),
    ("DELETE FROM scalar_param WHERE col=1", (), "more norms than there are parameter columns"),
])
def test_a_damaged_scalars_table_is_one_line_naming_the_file(tmp_path, sql, args, fragment):
    path = tmp_path / "t.gtrace"
    _record(path).close()
    _damage(path, sql, *args)
    with pytest.raises(TraceFileError) as info:
        gradtrace.load(path).scalars()
    msg = str(info.value)
    assert fragment in msg and str(path) in msg and "\n" not in msg


def test_older_formats_read_with_losses_and_no_norms():
    t = gradtrace.load(Path(__file__).parent / "data" / "format1.gtrace")
    sc = t.scalars()
    assert not sc.has_norms and sc.full.all() and len(sc) == len(t.steps)
    assert sc.loss[1] == pytest.approx(t.steps[1].backward.loss)
    assert np.isnan(sc.grad_norm).all() and (sc.accumulation == -1).all()
