"""The row layouts of gradtrace/tracefile/rows.py: what the writer writes, the reader reads back."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from gradtrace.tracefile import rows
from gradtrace.tracefile.checked import Malformed
from gradtrace.tracefile.model import Stats
from gradtrace.tracefile.rows import (
    BackwardRow, EventRow, NodeRow, OpRow, SourceRow, StepHead, TensorRow,
)
from gradtrace.tracefile.store import _SCHEMA, FORMAT_VERSION, TraceWriter, tensor_bytes


def _write_one_step(path=None):
    """A step written through the writer's public API only, as the recorder does."""
    w = TraceWriter(path, {"script": "rows.py"})
    w.add_source(SourceRow(0, "rows.py", 3, "loss.backward()", "main"))
    w.add_tensor(TensorRow(0, "w", "param", (2,), "float32", 1))
    w.add_tensor(TensorRow(1, None, "activation", (), "float32", 1))
    w.name_tensor(1, "loss")
    x = torch.tensor([1.5, -2.0])
    w.add_bytes(0, 0, tuple(x.shape), "float32", tensor_bytes(x))
    w.add_bytes(1, 1, (), "float32", tensor_bytes(torch.tensor(3.0)))
    w.add_stats(4, None, (2,), "float32", Stats(2, 0.5, 0.375, 0.25, 0.5, 0))
    w.add_zeros(2, (2,), "float32")
    w.add_bytes(3, None, (2,), "float32", tensor_bytes(torch.tensor([0.5, 0.25])))
    w.add_op(OpRow(0, 0, "sum", "Tensor.sum", [0], [1], ["$t0", "$$x", {"tuple": [1, 2]}],
                   {"dim": 0}, "SumBackward0", "net", None, 1, 0))
    w.set_backward(BackwardRow(1, "Tensor.backward", [1], 1, [], [], 0))
    w.add_node(NodeRow(0, "SumBackward0", 0, None, [1], 0, [1], [3]))
    w.add_node(NodeRow(1, "AccumulateGrad", None, 0, [], 1, [4], []))
    w.add_event(EventRow(2, "accumulate", 0, "added onto zeros", 2, 3, 3, 0, None, 0, 0, "zeros", 0))
    w.commit_step(StepHead(0, 0, 2, 1, 3.0, 1, 2, 0, 1, 0, 0, 0, 0, 0))
    return w


@pytest.mark.parametrize("on_disk", [False, True])
def test_rows_round_trip_through_the_writer_and_the_reader(tmp_path, on_disk):
    w = _write_one_step(tmp_path / "rows.gtrace" if on_disk else None)
    w.finish("completed")
    t = w.reader()
    assert t.info.format_version == FORMAT_VERSION
    assert t.tensors[0].name == "w" and t.tensors[0].shape == (2,) and t.tensors[0].requires_grad
    assert t.tensors[1].name == "loss" and t.tensors[1].role == "activation"
    s = t.steps[0]
    (op,) = s.ops
    assert (op.index, op.seq, op.name, op.target, op.inputs, op.outputs) == \
        (0, 0, "sum", "Tensor.sum", (0,), (1,))
    assert op.args == ({"tensor": 0}, "$x", (1, 2)) and op.kwargs == {"dim": 0}
    assert (op.grad_fn, op.module, op.parent, op.is_graph) == ("SumBackward0", "net", None, True)
    assert str(op.source) == "rows.py:3" and op.source.code == "loss.backward()"
    bw = s.backward
    assert (bw.seq, bw.api, bw.roots, bw.loss) == (1, "Tensor.backward", (1,), 3.0)
    assert [(n.nid, n.name, n.op, n.variable, n.next, n.order) for n in bw.nodes] == [
        (0, "SumBackward0", 0, None, (1,), 0), (1, "AccumulateGrad", None, 0, (), 1)]
    assert bw.nodes[0].grad_inputs[0].data.tolist() == [0.5, 0.25]
    g = bw.nodes[1].grad_outputs[0]
    assert g.data is None and g.stats == Stats(2, 0.5, 0.375, 0.25, 0.5, 0)
    (e,) = s.events
    assert (e.seq, e.kind, e.tensor, e.idiom, e.fresh, e.via, e.inferred) == \
        (2, "accumulate", 0, "added onto zeros", False, None, False)
    assert (e.accumulation, e.through_data) == ("zeros", False)
    assert e.before.data.tolist() == [0.0, 0.0] and e.after.data.tolist() == [0.5, 0.25]
    assert e.incoming is e.after
    assert s.value(0).data.tolist() == [1.5, -2.0]
    row = t.step_rows()[0]
    assert (row["index"], row["loss"], row["ops"], row["backward_nodes"], row["accumulate_added"]) == \
        (0, 3.0, 1, 2, 1)


def test_the_written_schema_has_the_columns_the_rows_define():
    c = sqlite3.connect(":memory:")
    c.executescript(_SCHEMA)

    def columns(table):
        return tuple(r[1] for r in c.execute(f"PRAGMA table_info({table})"))

    assert columns("source") == SourceRow._fields
    assert columns("tensor") == TensorRow._fields
    assert columns("step") == rows.step_columns(FORMAT_VERSION)
    assert columns("step")[:len(StepHead._fields)] == StepHead._fields


def test_a_nan_loss_is_kept():
    w = TraceWriter(None, {})
    w.commit_step(StepHead(0, 0, 0, 1, float("nan"), 0, 0, 0, 0, 0, 0, 0, 0, 0))
    loss = w.reader().step_rows()[0]["loss"]
    assert loss != loss


def test_decode_checks_the_width_of_each_format():
    good = [0, "sum", "Tensor.sum", [], [], [], {}, None, None, None, 1, None]
    with pytest.raises(Malformed, match="has 12 fields, not 13"):
        rows.decode(OpRow, good, "an op", FORMAT_VERSION)
    r = rows.decode(OpRow, [0, *good], "an op", FORMAT_VERSION)
    assert r.idx == 0 and r.name == "sum" and r.sid is None
    with pytest.raises(Malformed, match="not a row"):
        rows.decode(NodeRow, {"nid": 0}, "a node", FORMAT_VERSION)
    for row_type in (SourceRow, TensorRow, StepHead, OpRow, BackwardRow, NodeRow, EventRow):
        assert rows.width(row_type, FORMAT_VERSION) == len(row_type._fields)
        assert 0 < rows.width(row_type, 1) <= len(row_type._fields)


def _as_format_2(path):
    """Rewrite a trace as format 2 wrote it: event rows without their last two fields, the
    backward row without format 4's left_out, no scalars tables."""
    import json

    c = sqlite3.connect(path)
    for idx, body in c.execute("SELECT idx, body FROM step").fetchall():
        b = json.loads(body)
        b["events"] = [r[:11] for r in b["events"]]
        if b.get("backward"):
            b["backward"] = b["backward"][:7]
        c.execute("UPDATE step SET body=? WHERE idx=?", (json.dumps(b), idx))
    c.execute("DROP TABLE scalars")
    c.execute("DROP TABLE scalar_param")
    c.execute("UPDATE meta SET value='2' WHERE key='version'")
    c.execute("PRAGMA user_version=2")
    c.commit()
    c.close()


def _loop(zero: bool, via_data: bool):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    for _ in range(3):
        (X @ w).pow(2).mean().backward()
        if via_data:
            w.data -= 0.1 * w.grad.data
        else:
            with torch.no_grad():
                w -= 0.1 * w.grad
        if zero:
            w.grad.zero_()


@pytest.mark.parametrize("zero, via_data, kinds", [
    (True, False, ["fresh", "zeros", "zeros"]),
    (False, True, ["fresh", "added", "added"]),
])
def test_format_2_files_are_read_with_the_fields_derived(tmp_path, zero, via_data, kinds):
    import gradtrace

    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path):
        _loop(zero, via_data)
    new = gradtrace.load(path)
    new_events = [(e.kind, e.idiom, e.accumulation, e.through_data) for s in new.steps for e in s.events]
    assert [a for k, _, a, _ in new_events if k == "accumulate"] == kinds
    assert [d for k, _, _, d in new_events if k == "update"] == [via_data] * 3
    new.close()
    _as_format_2(path)
    old = gradtrace.load(path)
    assert old.info.format_version == 2
    assert [(e.kind, e.idiom, e.accumulation, e.through_data) for s in old.steps for e in s.events] \
        == new_events


def test_format_1_accumulations_have_their_kind():
    from pathlib import Path

    import gradtrace

    t = gradtrace.load(Path(__file__).parent / "data" / "format1.gtrace")
    assert [(s.index, e.accumulation) for s in t.steps for e in s.accumulations] == [
        (0, "fresh"), (1, "zeros")]
    assert not any(e.through_data for s in t.steps for e in s.events)


def test_format_3_checks_the_new_fields(tmp_path):
    import json

    import gradtrace
    from gradtrace.errors import TraceFileError

    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path):
        _loop(True, False)
    for field, value, fragment in ((11, "maybe", "accumulation"), (11, None, "accumulation"),
                                   (12, "yes", "through_data")):
        c = sqlite3.connect(path)
        (body,) = c.execute("SELECT body FROM step WHERE idx=0").fetchone()
        b = json.loads(body)
        acc = next(r for r in b["events"] if r[1] == "accumulate")
        kept = acc[field]
        acc[field] = value
        c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(b),))
        c.commit()
        with pytest.raises(TraceFileError, match=fragment):
            gradtrace.load(path).steps[0]
        acc[field] = kept
        c.execute("UPDATE step SET body=? WHERE idx=0", (json.dumps(b),))
        c.commit()
        c.close()
    assert gradtrace.load(path).steps[0].accumulations[0].accumulation == "fresh"
