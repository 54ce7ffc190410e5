"""analysis.linear.reader: one step's ops read as an expression graph: producers, parameters, values, numbers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.analysis.linear.reader import _NA, _Reader, _at, _broadcast, _dims, _num
from gradtrace.tracefile.model import Op, Source

torch.manual_seed(0)
X = torch.randn(40, 3)        # 120 elements
Y = torch.randn(40, 1)


def _read(loss_fn, **options):
    """The reader of one recorded backward of ``loss_fn(w)``, w a (3, 1) parameter."""
    w = torch.zeros(3, 1, requires_grad=True)
    with gradtrace.trace(**options) as t:
        loss_fn(w).backward()
    return _Reader(t.steps[0])


def _tid(r: _Reader, label: str) -> int:
    return next(t for t, info in r.step.tensors.items() if info.label == label)


def _op(r: _Reader, name: str) -> Op:
    return next(o for o in r.ops if o.name == name)


@pytest.fixture(scope="module")
def mse():
    """((X @ w - Y) ** 2).mean() / 4: matmul, sub, pow, mean, div."""
    return _read(lambda w: ((X @ w - Y) ** 2).mean() / 4)


def test_the_parameters_and_what_depends_on_them(mse):
    r = mse
    w, x, y = _tid(r, "w"), _tid(r, "X"), _tid(r, "Y")
    assert r.params == {w}
    made = {o.name: o.outputs[0] for o in r.ops}
    assert r.dependent == {w, *made.values()}
    assert x not in r.dependent and y not in r.dependent
    assert r.op(made["sub"]).name == "sub" and r.op(x) is None and r.op(None) is None
    assert r.tensor_args(_op(r, "sub")) == [made["matmul"], y]
    assert r.tensor_args(_op(r, "pow")) == [made["sub"], None]   # 2 is not a tensor


def test_shapes_values_and_constants(mse):
    r = mse
    x, made = _tid(r, "X"), {o.name: o.outputs[0] for o in r.ops}
    assert r.shape(x) == (40, 3) and r.numel(x) == 120 and r.shape(made["mean"]) == ()
    torch.testing.assert_close(r.const(x, "the input X"), X, rtol=0, atol=0)
    with pytest.raises(_NA, match=r"the prediction \(t\d+\) depends on the parameters"):
        r.const(made["matmul"], "the prediction")
    with pytest.raises(_NA, match=r"the value of the data \(t999\) was not recorded"):
        r.data(999, "the data")


def test_a_value_kept_as_statistics_only_says_which_option_keeps_it():
    r = _read(lambda w: ((X @ w - Y) ** 2).mean(), max_value_numel=100)
    with pytest.raises(_NA) as e:
        r.data(_tid(r, "X"), "the input X")
    assert e.value.reason == ("only statistics of the input X (X, 120 elements) were kept; record "
                              "with a larger --max-numel to check it")
    assert r.shape(_tid(r, "X")) == (40, 3)   # the shape is known all the same


def test_scalars_are_numbers_or_one_element_constants():
    c = torch.tensor([2.5])
    r = _read(lambda w: (X @ w * c).sum() * w.sum())
    assert r.scalar(3) == 3.0 and r.scalar(-0.5) == -0.5
    assert r.scalar(True) is None and r.scalar("2") is None and r.scalar(None) is None
    assert r.scalar({"tensor": _tid(r, "c")}) == 2.5
    assert r.scalar({"tensor": _tid(r, "X")}) is None                       # not one element
    dependent = next(o for o in r.ops if o.name == "sum" and o.inputs == (_tid(r, "w"),))
    assert r.scalar({"tensor": dependent.outputs[0]}) is None              # depends on w


def test_rescalings_are_what_multiplies_the_total_of_their_input(mse):
    r = mse
    made = {o.name: o for o in r.ops}
    mean, div = made["mean"], made["div"]
    # mean: numel(result) / numel(input); a division by a number: 1 / s
    assert r.rescaling(mean.outputs[0], mean) == (made["pow"].outputs[0], 1.0, 40.0)
    assert r.rescaling(div.outputs[0], div) == (mean.outputs[0], 1.0, 4.0)
    assert r.rescaling(made["sub"].outputs[0], made["sub"]) is None
    by_zero = replace(div, args=(div.args[0], 0))
    assert r.rescaling(div.outputs[0], by_zero) is None
    rounding = replace(div, kwargs={"rounding_mode": "floor"})
    assert r.rescaling(div.outputs[0], rounding) is None
    not_a_tensor = replace(made["sub"], args=({"repr": "'x'"}, made["sub"].args[1]))
    with pytest.raises(_NA, match="argument 0 of sub is not a tensor"):
        r.source(not_a_tensor)


def test_keyword_or_positional_arguments_and_the_dim_of_a_reduction():
    op = Op(index=0, seq=0, step=0, name="sum", target="Tensor.sum", inputs=(1,), outputs=(2,),
            args=({"tensor": 1}, 1), kwargs={"keepdim": True}, grad_fn=None, module=None, parent=None,
            is_graph=True, source=None)
    assert _Reader.kw(op, "keepdim") is True
    assert _Reader.kw(op, "dim", 1) == 1 and _Reader.kw(op, "dim", 5, "none") == "none"
    assert _dims(op) == 1
    assert _dims(replace(op, args=({"tensor": 1},), kwargs={"axis": -1})) == -1
    assert _dims(replace(op, args=({"tensor": 1},), kwargs={})) is None


def test_numbers_are_ints_and_floats_but_not_bools():
    assert _num(2) == 2.0 and isinstance(_num(2), float) and _num(0.5) == 0.5
    assert _num(True) is None and _num("1") is None and _num({"tensor": 1}) is None


@pytest.mark.parametrize("shapes", [((3, 1), (1, 4)), ((), (2, 3)), ((5, 1, 2), (4, 1)), ((1,), (1,)),
                                    ((0, 3), (1, 3))])
def test_broadcasting_is_numpys(shapes):
    # numpy's, not torch.broadcast_shapes (which imports sympy: half a second)
    assert _broadcast(*shapes) == np.broadcast_shapes(*shapes)


def test_shapes_that_do_not_broadcast_are_a_value_error():
    with pytest.raises(ValueError, match="do not broadcast"):
        _broadcast((2,), (3,))


def test_where_an_op_is_in_the_script():
    op = Op(index=0, seq=0, step=0, name="mul", target="Tensor.mul", inputs=(), outputs=(), args=(),
            kwargs={}, grad_fn=None, module=None, parent=None, is_graph=True,
            source=Source("/home/me/poly.py", 9, "  y = b * c * x  "))
    assert _at(op) == " at poly.py:9 (`y = b * c * x`)"
    assert _at(replace(op, source=Source("/home/me/poly.py", 9))) == " at poly.py:9"
    assert _at(replace(op, source=None)) == "" and _at(None) == ""
