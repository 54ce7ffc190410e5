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


