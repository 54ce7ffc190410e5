"""The Trace facade (gradtrace/tracefile/reader.py): tables, steps by number, one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import gradtrace
from gradtrace.errors import NotRecordedError, TraceFileError, UsageError
from gradtrace.tracefile.reader import Trace
from gradtrace.tracefile import conveniences
from gradtrace.tracefile.rows import EventRow, ScalarRow, SourceRow, StepHead, TensorRow
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



# -- a synthetic run, written through the writer -------------------------------------------------
def _head(idx, first, last, has_backward=1):
    return StepHead(idx, first, last, has_backward, 0.5 * idx if has_backward else None,
                    0, 0, 0, 0, 0, 1, 0, 0, 0)


def _zero(seq, tid=0):
    return EventRow(seq, "zero", tid, "p.grad = None", None, None, None, None, None, 0, None, None, 0)


def _write(path=None, steps=((0, 1), (2, 1), (5, 0))):
    """A run of the given (step number, has_backward) steps, each with one zeroing at its
    first seq; tensors w (a param), X (an input) and one unnamed activation."""
    w = TraceWriter(path, {"script": "fit.py", "argv": ["fit.py", "--lr", "0.1"]})
    w.add_source(SourceRow(0, "fit.py", 4, "w.grad = None", "<module>"))
    w.add_tensor(TensorRow(0, "w", "param", (3,), "float32", 1))
    w.add_tensor(TensorRow(1, "X", "input", (8, 3), "float32", 0))
    w.add_tensor(TensorRow(2, None, "activation", (8,), "float32", 1))
    for idx, has_backward in steps:
        w.add_event(_zero(10 * idx))
        w.add_event(_zero(10 * idx + 1, tid=2))
        w.commit_step(_head(idx, 10 * idx, 10 * idx + 1, has_backward))
    w.finish("completed", exit_code=0)
    return w


def test_the_runs_tables_are_read_once_and_kept():
    t = _write().reader()
    assert (t.info.script, t.info.argv, t.info.status, t.info.exit_code) == \
        ("fit.py", ("fit.py", "--lr", "0.1"), "completed", 0)
    assert t.info is t.info and t.tensors is t.tensors and t.sources is t.sources
    assert t.sources[0].code == "w.grad = None"
    assert [i.label for i in t.tensors.values()] == ["w", "X", "t2"]
    assert [p.tid for p in t.params] == [0]
    assert (t.name(0), t.name(2), t.name(99)) == ("w", "t2", "t99")
    assert t.find("X").shape == (8, 3) and t.find("nope") is None


def test_steps_are_found_by_their_run_step_number():
    t = _write().reader()
    assert t.steps.indices == [0, 2, 5] and len(t.steps) == 3
    assert t.step(2).index == 2 and t.steps[1] is t.step(2)
    with pytest.raises(NotRecordedError) as e:
        t.step(3)
    assert str(e.value) == "step 3 was not recorded; recorded steps are 0..5 (3 of them)"
    with pytest.raises(NotRecordedError, match=r"^step 9 was not recorded; recorded steps are 0\.\.1$"):
        _write(steps=((0, 1), (1, 1))).reader().step(9)
    with pytest.raises(NotRecordedError, match=r"^step 0 was not recorded; <memory> has no recorded steps$"):
        _write(steps=()).reader().step(0)


def test_select_takes_first_last_or_a_number():
    t = _write().reader()
    assert t.select().index == 0 and t.select("first").index == 0 and t.select(None).index == 0
    assert t.select("last").index == 2  # step 5 has no backward pass
    assert t.select("5").index == 5 and t.select(2).index == 2


@pytest.mark.parametrize("steps, spec, says", [
    (((0, 1), (2, 1)), "x", "--step takes a step number, 'first' or 'last', not 'x'"),
    (((0, 1), (2, 1)), 1, "step 1 was not recorded; recorded steps are 0..2 (2 of them)"),
    ((), "first", "<memory> has no recorded steps (did the script call backward()?)"),
    (((0, 0),), "last", "<memory> has no step with a backward pass"),
])
def test_select_says_in_one_line_what_was_recorded(steps, spec, says):
    with pytest.raises(UsageError) as e:
        _write(steps=steps).reader().select(spec)
    assert str(e.value) == says


def test_events_are_every_steps_timeline_in_order():
    t = _write().reader()
    assert [(e.step, e.seq, e.tensor) for e in t.events] == [
        (0, 0, 0), (0, 1, 2), (2, 20, 0), (2, 21, 2), (5, 50, 0), (5, 51, 2)]


def test_step_rows_are_the_counts_and_a_copy_each_time():
    t = _write().reader()
    rows = t.step_rows()
    assert [(r["index"], r["has_backward"], r["loss"], r["zeroings"]) for r in rows] == [
        (0, True, 0.0, 1), (2, True, 1.0, 1), (5, False, None, 1)]
    rows.clear()
    assert len(t.step_rows()) == 3


def test_scalar_steps_counts_the_scalars_rows():
    w = TraceWriter(None, {})
    for idx in range(4):
        w.add_scalars(ScalarRow(idx, int(idx == 0), b"", b""))
    w.commit_step(_head(0, 0, 0))
    w.finish("completed")
    t = w.reader()
    assert t.scalar_steps() == 4 and len(t.steps) == 1
    assert _write().reader().scalar_steps() == 0


def test_the_repr_names_the_file_and_counts_the_steps():
    assert repr(_write().reader()) == "<gradtrace.Trace <memory> steps=3>"


def test_the_conveniences_dispatch_with_the_trace(monkeypatch):
    t = _write().reader()
    for name in ("check", "animate", "explore"):
        monkeypatch.setitem(conveniences._IMPLEMENTATIONS, name,
                            lambda trace, _name=name, **kw: (_name, trace, kw))
    monkeypatch.setitem(conveniences._IMPLEMENTATIONS, "html", lambda trace: 1 / 0)
    assert t.check(strict=True) == ("check", t, {"strict": True})
    assert t.animate() == ("animate", t, {"kind": "training"})
    assert t.animate("backprop", frames=3) == ("animate", t, {"kind": "backprop", "frames": 3})
    assert t.explore(budget=10) == ("explore", t, {"budget": 10})
    assert t._repr_html_() is None  # a failing HTML repr falls back to the plain one


# -- a damaged run's tables: one line naming the file ------------------------------------------
@pytest.mark.parametrize("sql, read, says", [
    ("UPDATE meta SET value='\"weird\"' WHERE key='status'", "info",
     "meta 'status' is 'weird', not one of running, completed, raised, exited, interrupted"),
    ("UPDATE meta SET value=X'80049500' WHERE key='script'", "info", "meta 'script' is not UTF-8 text"),
    ("UPDATE meta SET value='-3' WHERE key='steps_seen'", "info", "meta 'steps_seen' is -3, out of range"),
    ("UPDATE source SET line='four'", "sources", "source line 0's line number is text, not a whole number"),
    ("INSERT INTO tensor VALUES (7, 'b', 'weight', '[1]', 'float32', 1)", "tensors",
     "tensor 7: tensor 7 has role 'weight', not param, input or activation"),
    ("UPDATE step SET tensors=json_replace(tensors, '$[1][2]', 'weight') WHERE idx=0", "tensors",
     "step 0's tensors: tensor 1 has role 'weight', not param, input or activation"),
    ("UPDATE step SET tensors=json_replace(tensors, '$[0][3]', json('[3, -1]')) WHERE idx=0",
     "tensors", "step 0's tensors: tensor 0's shape holds -1, not a size"),
    ("UPDATE step SET tensors='{}' WHERE idx=0", "tensors", "step 0's tensors is not a list"),
    ("UPDATE step SET n_zero=-1 WHERE idx=2", "step_rows", "step 2's zeroing count is -1, out of range"),
    ("UPDATE step SET last_seq=0 WHERE idx=2", "step_rows", "step 2 ends (seq 0) before it begins (seq 20)"),
])
def test_a_damaged_table_is_one_line_naming_the_file(tmp_path, sql, read, says):
    path = tmp_path / "run.gtrace"
    _write(path)
    c = sqlite3.connect(path)
    c.execute(sql)
    c.commit()
    c.close()
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as e:
        x = getattr(t, read)
        x() if callable(x) else x
    assert str(e.value) == (f"{path}: {says}; the file is damaged or was not written by "
                            "gradtrace: record the run again")


def test_a_query_the_file_cannot_answer_is_one_line(tmp_path):
    path = tmp_path / "run.gtrace"
    _write(path)
    t = gradtrace.load(path)
    with pytest.raises(TraceFileError) as e:
        t._q("SELECT nope FROM step")
    assert str(e.value) == f"{path}: truncated or corrupt (no such column: nope); record the run again"
    assert t.info.status == "completed"  # the connection is still good
    assert isinstance(t, Trace)


def test_a_closed_trace_says_so_and_not_that_the_file_is_damaged(tmp_path):
    path = tmp_path / "run.gtrace"
    _write(path)
    t = gradtrace.load(path)
    t.close()
    for read in (lambda: t.info, lambda: t.steps, lambda: t.step(0)):
        with pytest.raises(UsageError) as e:
            read()
        assert not isinstance(e.value, TraceFileError)
        assert str(e.value) == f"{path}: this Trace was closed; gradtrace.load() it again to read it"
    assert gradtrace.load(path).info.status == "completed"  # the file itself is fine
