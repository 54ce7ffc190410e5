"""The trace data model (gradtrace/tracefile/model.py): Stats, Value and the records of a Step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradtrace.errors import NotRecordedError
from gradtrace.tracefile import conveniences
from gradtrace.tracefile.arrays import tensor_array
from gradtrace.tracefile.dtypes import dtype_name
from gradtrace.tracefile.model import (
    Backward, Bucket, Event, GradNode, Op, OptimizerInfo, ParamGroup, Source, Stats, Step,
    TensorInfo, Value, memory_run,
)


def test_value_statistics_from_an_array_agree_with_torch():
    g = torch.Generator().manual_seed(3)
    for t in (torch.randn(10, generator=g), torch.randn(500, 7, generator=g) * 3 + 1,
              torch.randint(-5, 5, (300,), generator=g), torch.tensor([True, False] * 50),
              torch.tensor([1.0, float("nan"), -2.0, float("inf")] * 40)):
        mine = Value(0, tuple(t.shape), dtype_name(t.dtype), array=tensor_array(t)).stats
        theirs = Stats.of(t)
        assert (mine.numel, mine.nonfinite) == (theirs.numel, theirs.nonfinite)
        for field in ("norm", "mean", "min", "max"):
            a, b = getattr(mine, field), getattr(theirs, field)
            assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (t.dtype, field, a, b)
    small = torch.tensor([0.1, 0.2, 0.3])
    assert Value(0, (3,), "float32", array=small.numpy()).stats == Stats.of(small)  # same path
    empty = Value(0, (0,), "float32", array=np.zeros(0, np.float32)).stats
    assert empty.numel == 0 and math.isnan(empty.mean)


def test_statistics_of_a_strided_view_are_those_of_its_copy():
    """A transposed weight or a permuted activation is reduced as the flat memory it covers
    (fast); a view with gaps is reduced as it is. Either way: the statistics of the copy."""
    from gradtrace.tracefile.model import _in_memory_order

    g = torch.Generator().manual_seed(5)
    w = torch.randn(256, 784, generator=g)
    x = torch.randn(4, 5, 6, 7, generator=g)
    for t, dense in ((w.t(), True), (x.permute(2, 0, 3, 1), True), (w[:, ::2], False),
                     (torch.randn(3, 1, 50, generator=g).transpose(0, 2), True)):
        flat = _in_memory_order(t)
        assert flat.is_contiguous() == dense and flat.numel() == t.numel()
        mine, copy = Stats.of(t), Stats.of(t.contiguous())
        assert (mine.numel, mine.min, mine.max, mine.nonfinite) == \
            (copy.numel, copy.min, copy.max, copy.nonfinite)
        assert math.isclose(mine.norm, copy.norm, rel_tol=1e-5)
        assert math.isclose(mine.mean, copy.mean, rel_tol=1e-4, abs_tol=1e-6)
    assert _in_memory_order(w) is w


def test_a_memory_run_is_where_the_values_lie_without_gaps():
    a = torch.randn(4, 5, 6)
    run = memory_run(a)
    assert run == (a.data_ptr(), 120, torch.float32, a.device, False, False)
    # any order over the same memory: the same run (so the same statistics)
    for same in (a.permute(2, 0, 1), a.transpose(0, 2), a.reshape(20, 6), a.view(-1)):
        assert memory_run(same) == run and Stats.of(same) == Stats.of(a)
    # gaps, a part, another dtype, a lazily negated view: another run, or none
    assert memory_run(a[:, ::2]) is None and memory_run(a.view(-1)[::2]) is None
    assert memory_run(a[:2]) != run and memory_run(a.view(torch.int32)) != run
    assert memory_run(torch._neg_view(a)) != run
    assert memory_run(torch.ones(3).expand(4, 3)) is None  # one row seen four times


def test_a_value_made_from_a_tensor_or_an_array_has_both_views():
    t = torch.tensor([[1.0, -2.0]])
    v = Value(1, (1, 2), "float32", t)
    assert v.data is t and v.array.tolist() == [[1.0, -2.0]] and v.item() is None
    assert v.stats == Stats.of(t)
    w = Value(2, (), "float32", array=np.array(2.5, dtype=np.float32))
    assert w.item() == 2.5 and w.data.dtype == torch.float32 and float(w.data) == 2.5
    s = Value(3, (4,), "float32", None, Stats(4, 1.0, 0.0, -1.0, 1.0, 0))
    assert not s.kept and s.array is None and s.data is None and s.item() is None
    assert "stats" in repr(s) and "kept" in repr(v)


def test_statistics_of_large_float_tensors_match_float64_and_never_overflow():
    """The float path (min/max in torch, the norm as numpy's dot product): what float64
    gives, for contiguous tensors, views and values whose squares exceed float32, with no
    warning from numpy."""
    import warnings

    g = torch.Generator().manual_seed(11)
    big = torch.full((3000,), 1e20)
    cases = (torch.randn(256, 784, generator=g), torch.randn(256, 784, generator=g).t(),
             torch.randn(300, 500, generator=g)[:, ::2], torch.rand(70_000, generator=g) + 1e3,
             torch.randn(4000, generator=g, dtype=torch.float64), big)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in cases:
            s = Stats.of(t)
            ref = t.double()
            assert (s.numel, s.nonfinite) == (t.numel(), 0)
            assert (s.min, s.max) == (float(ref.min()), float(ref.max()))
            assert math.isclose(s.norm, float(ref.norm()), rel_tol=1e-6), (t.shape, s.norm)
            assert math.isclose(s.mean, float(ref.mean()), rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(Stats.of(big).norm, 1e20 * math.sqrt(3000), rel_tol=1e-6)
    nan = torch.randn(5000, generator=g)
    nan[7] = float("nan")
    s = Stats.of(nan)
    assert s.nonfinite == 1 and math.isfinite(s.norm)



# -- Source, Stats ------------------------------------------------------------------------------
def test_a_source_prints_as_file_and_line_and_shortens_any_path():
    assert str(Source("/home/u/train.py", 12)) == "/home/u/train.py:12"
    assert Source("/home/u/train.py", 12).short == "train.py:12"
    assert Source(r"C:\Users\u\fit.py", 3).short == "fit.py:3"
    assert Source("fit.py", 1).short == "fit.py:1" and Source("fit.py", 1).code == ""


def _reference(xs):
    """The statistics by hand, in float64, of the finite values (numel and non-finite of all)."""
    a = np.asarray(xs, dtype=np.float64).ravel()
    fin = a[np.isfinite(a)]
    return a.size, math.sqrt(float((fin * fin).sum())), float(fin.mean()), float(fin.min()), \
        float(fin.max()), int(a.size - fin.size)


@pytest.mark.parametrize("n", [5, 300])  # the small path (plain Python) and the general one
def test_non_finite_values_are_counted_and_left_out_of_the_statistics(n):
    g = torch.Generator().manual_seed(n)
    t = torch.randn(n, generator=g)
    t[1], t[3], t[4] = float("nan"), float("inf"), -float("inf")
    s = Stats.of(t)
    numel, norm, mean, lo, hi, nonfinite = _reference(t.numpy())
    assert (s.numel, s.nonfinite, s.min, s.max) == (numel, nonfinite, lo, hi)
    assert nonfinite == 3 and not s.finite
    assert math.isclose(s.norm, norm, rel_tol=1e-6) and math.isclose(s.mean, mean, rel_tol=1e-5, abs_tol=1e-7)
    a = Stats.of_array(t.numpy())
    assert (a.numel, a.nonfinite, a.min, a.max) == (numel, nonfinite, lo, hi)
    assert math.isclose(a.norm, norm, rel_tol=1e-9)


@pytest.mark.parametrize("n", [4, 100])
def test_all_non_finite_or_empty_values_have_nan_statistics(n):
    for t, nonfinite in ((torch.full((n,), float("nan")), n), (torch.zeros(0, 3), 0)):
        for s in (Stats.of(t), Stats.of_array(t.numpy())):
            assert (s.numel, s.nonfinite) == (t.numel(), nonfinite)
            assert all(math.isnan(x) for x in (s.norm, s.mean, s.min, s.max))
    assert Stats.of(torch.zeros(0)).finite  # nothing in it is non-finite


@pytest.mark.parametrize("n", [6, 200])
def test_bool_int_and_complex_values_are_summarised_as_numbers(n):
    g = torch.Generator().manual_seed(n)
    cases = [
        (torch.rand(n, generator=g) > 0.5, lambda a: a.astype(np.float64)),
        (torch.randint(-50, 50, (n,), generator=g), lambda a: a.astype(np.float64)),
        (torch.randn(n, generator=g, dtype=torch.complex64), np.abs),  # by magnitude
        (torch.randn(n, 2, generator=g, requires_grad=True), lambda a: a),
    ]
    for t, as_real in cases:
        s = Stats.of(t)
        numel, norm, mean, lo, hi, nonfinite = _reference(as_real(t.detach().numpy()))
        assert (s.numel, s.nonfinite) == (numel, nonfinite), t.dtype
        assert math.isclose(s.min, lo, rel_tol=1e-6, abs_tol=1e-7) and math.isclose(s.max, hi, rel_tol=1e-6)
        assert math.isclose(s.norm, norm, rel_tol=1e-5) and math.isclose(s.mean, mean, rel_tol=1e-4, abs_tol=1e-6)


# -- Value, TensorInfo --------------------------------------------------------------------------
def test_a_values_size_scalar_and_item():
    one = Value(0, (1, 1), "float64", array=np.array([[4.25]]))
    assert (one.numel, one.is_scalar, one.item()) == (1, True, 4.25)
    many = Value(1, (2, 3), "float32", torch.zeros(2, 3))
    assert (many.numel, many.is_scalar, many.item()) == (6, False, None)
    assert Value(2, (0, 5), "float32", array=np.zeros((0, 5), np.float32)).numel == 0
    stats = Stats(1, 2.0, 2.0, 2.0, 2.0, 0)
    only = Value(3, (), "float32", None, stats)
    assert only.is_scalar and only.item() is None and only.stats is stats
    assert repr(only) == "Value(vid=3, shape=(), dtype='float32', stats)"
    assert repr(one) == "Value(vid=0, shape=(1, 1), dtype='float64', kept)"


def test_a_tensor_is_labelled_by_its_name_or_its_id():
    assert TensorInfo(3, "net.0.weight", "param", (2, 2), "float32", True).label == "net.0.weight"
    assert TensorInfo(7, None, "activation", (), "float32", True).label == "t7"
    assert TensorInfo(8, "", "input", (1,), "int64", False).label == "t8"


# -- ops, backward passes, optimizers, buckets --------------------------------------------------
def _op(index, seq, *, is_graph=True, parent=None, target="torch.mul", outputs=None):
    return Op(index=index, seq=seq, step=3, name="mul", target=target, inputs=(0,),
              outputs=outputs or (index + 10,), args=(), kwargs={}, grad_fn=None, module=None,
              parent=parent, is_graph=is_graph, source=None)


def test_an_op_is_a_custom_function_by_its_target():
    assert _op(0, 0, target="autograd.Function:MyReLU").is_function
    assert not _op(0, 0, target="torch.relu").is_function
    assert not _op(0, 0, target=None).is_function  # a file may hold anything


def _node(nid, order):
    return GradNode(nid, "X", None, None, (), order, (), ())


def test_a_backward_pass_its_loss_truncation_and_execution_order():
    root = Value(0, (), "float32", array=np.array(0.5, np.float32))
    nodes = (_node(0, 0), _node(1, 2), _node(2, None), _node(3, 1))
    b = Backward(seq=5, step=3, api="Tensor.backward", roots=(9,), nodes=nodes, source=None,
                 root_value=root)
    assert b.loss == 0.5 and not b.truncated and b.node(2) is nodes[2]
    assert [n.nid for n in b.execution_order] == [0, 3, 1]  # by order; node 2 did not run
    cut = Backward(5, 3, "Tensor.backward", (9,), nodes, None, left_out=4)
    assert cut.truncated and cut.loss is None
    vec = Backward(5, 3, "Tensor.backward", (9,), (), None,
                   root_value=Value(0, (2,), "float32", array=np.zeros(2, np.float32)))
    assert vec.loss is None  # not a single number


def test_an_optimizer_lists_its_groups_params_in_order_and_a_bucket_its_label():
    o = OptimizerInfo("Adam", 0, None, (ParamGroup((3, 1), {"lr": 0.1}), ParamGroup((), {}),
                                        ParamGroup((2,), {}, frozen=(2,))))
    assert o.params == (3, 1, 2)
    assert Bucket(1, 4, None, None, False).label == "bucket 1 of 4"


# -- Step ------------------------------------------------------------------------------------------
def _event(seq, kind, tensor=0):
    return Event(seq=seq, step=3, kind=kind, tensor=tensor, idiom="", before=None, after=None,
                 source=None)


def _step(buckets=None, backward=True, ops=None):
    ops = ops if ops is not None else (
        _op(0, 0), _op(1, 1, is_graph=False), _op(2, 2, target="autograd.Function:F"),
        _op(3, 3, parent=2), _op(3, 4, is_graph=False))  # a repeated index: the first is found
    events = (_event(9, "accumulate"), _event(10, "update"), _event(11, "zero"),
              _event(12, "accumulate", 1), _event(13, "grad_write"))
    bw = Backward(seq=8, step=3, api="Tensor.backward", roots=(13,), nodes=(_node(0, 0),),
                  source=None, root_value=Value(0, (), "float32", array=np.array(1.5, np.float32))) \
        if backward else None
    tensors = {0: TensorInfo(0, "w", "param", (2,), "float32", True)}
    values = {0: Value(4, (2,), "float32", array=np.ones(2, np.float32))}
    return Step(index=3, ops=ops, backward=bw, events=events, values=values, tensors=tensors,
                buckets=buckets)


def test_a_steps_views_of_its_ops_and_events():
    s = _step()
    assert [o.index for o in s.graph_ops] == [0, 2]  # no prep op, no op inside a Function
    assert [e.seq for e in s.accumulations] == [9, 12]
    assert [e.seq for e in s.updates] == [10] and [e.seq for e in s.zeroings] == [11]
    assert s.loss == 1.5 and _step(backward=False).loss is None
    assert s.value(0) is s.values[0] and s.value(5) is None
    assert (s.name(0), s.name(5)) == ("w", "t5")


def test_a_steps_timeline_is_in_seq_order():
    s = _step()
    seqs = [x.seq for x in s.timeline()]
    assert seqs == sorted(seqs) == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13]
    assert s.timeline()[5] is s.backward and list(s) == s.timeline()


def test_an_op_by_its_run_wide_index():
    s = _step()
    assert s.op(3).seq == 3 and s.op(0) is s.ops[0]
    with pytest.raises(NotRecordedError) as e:
        s.op(7)
    assert isinstance(e.value, KeyError) and str(e.value) == "op 7 is not in step 3; its ops are 0..3"
    with pytest.raises(NotRecordedError, match=r"^op 0 is not in step 3; it has no ops$"):
        _step(ops=()).op(0)


def test_the_bucket_of_a_parameter():
    a, b = Bucket(0, 2, (0, 1), 64, False), Bucket(1, 2, (2,), 32, False)
    assert _step().bucket_of(0) is None and _step(buckets=()).bucket_of(0) is None
    one = Bucket(0, 1, None, None, True)
    assert _step(buckets=(one,)).bucket_of(99) is one  # a single bucket holds every parameter
    s = _step(buckets=(a, b))
    assert (s.bucket_of(1), s.bucket_of(2), s.bucket_of(3)) == (a, b, None)
    assert _step(buckets=(Bucket(0, 2, None, None, False), b)).bucket_of(0) is None


def test_a_steps_repr_says_what_it_holds():
    assert repr(_step()) == "<gradtrace.Step 3: 5 ops, backward 1 nodes, 5 events, loss 1.5>"
    assert repr(_step(backward=False, ops=())) == "<gradtrace.Step 3: 0 ops, no backward, 5 events>"


def test_step_graph_and_its_html_dispatch_through_the_registered_conveniences(monkeypatch):
    calls = []
    monkeypatch.setitem(conveniences._IMPLEMENTATIONS, "graph",
                        lambda step, **kw: calls.append((step, kw)) or "a graph")
    monkeypatch.setitem(conveniences._IMPLEMENTATIONS, "html", lambda step: f"<p>{step.index}</p>")
    s = _step()
    assert s.graph("forward", dpi=30) == "a graph" and calls == [(s, {"view": "forward", "dpi": 30})]
    assert s._repr_html_() == "<p>3</p>"
