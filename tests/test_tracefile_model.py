"""The trace data model (gradtrace/tracefile/model.py): Stats, Value, and the plain records a Step is made of."""

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
    TensorInfo, Value,
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

