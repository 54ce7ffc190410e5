"""Stored values decoded without torch (gradtrace/tracefile/arrays.py); Value and Stats are in
test_tracefile_model.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradtrace.tracefile.arrays import Bytes, Zeros, tensor_array
from gradtrace.tracefile.dtypes import ITEMSIZES, dtype_name, dtype_table
from gradtrace.tracefile.model import Stats, Value
from gradtrace.tracefile.rows import StepHead
from gradtrace.tracefile.store import TraceWriter, tensor_bytes


def _sample(dt: torch.dtype) -> torch.Tensor:
    """Values of every kind a dtype holds: for the 1-byte floats, each of their 256 bytes."""
    if dt.itemsize == 1 and dt.is_floating_point:
        return torch.arange(256, dtype=torch.uint8).view(dt)
    if dt == torch.bool:
        return torch.tensor([True, False, True])
    if dt.is_complex:
        z = torch.tensor([1 + 2j, -0.5j, float("inf"), complex(float("nan"), 1)])
        if dt == torch.complex32:  # torch makes none from Python numbers: its halves, viewed
            return torch.view_as_real(z).to(torch.float16).view(torch.complex32).reshape(-1)
        return z.to(dt)
    if dt.is_floating_point:
        return torch.tensor([0.0, -0.0, 1.5, -3.25e-3, 7e4, float("inf"), float("nan"),
                             1e-6]).to(dt)
    info = torch.iinfo(dt)
    return torch.tensor([info.min, -1 if info.min < 0 else 0, 0, 1, info.max], dtype=dt)


def _wide(t: torch.Tensor) -> np.ndarray:
    """What torch says the values are, in the dtype numpy holds them in."""
    name = dtype_name(t.dtype)
    if name == "complex32":
        return t.to(torch.complex64).numpy()
    if name == "bfloat16" or name.startswith("float8"):
        return t.to(torch.float32).numpy()
    if name in ("uint16", "uint32", "uint64"):
        return np.array(t.tolist(), dtype="u" + str(t.dtype.itemsize))
    return t.numpy()


def _read_back(tensors: list[torch.Tensor]):
    """The values as the reader gives them, after a trip through the writer."""
    w = TraceWriter(None, {"script": "arrays.py"})
    for i, t in enumerate(tensors):
        w.add_bytes(i, i, tuple(t.shape), dtype_name(t.dtype), tensor_bytes(t))
    w.commit_step(StepHead(0, 0, 0, 0, None, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    w.finish("completed")
    return w.reader().steps[0]


def test_every_dtype_decodes_to_numpy_exactly_and_to_torch_as_recorded():
    dts = [dt for name, dt in dtype_table().items()]
    assert {dtype_name(dt) for dt in dts} <= set(ITEMSIZES)
    tensors = [_sample(dt).reshape(1, -1) for dt in dts]
    step = _read_back(tensors)
    for i, t in enumerate(tensors):
        v = step.value(i)
        assert v.kept and v.dtype == dtype_name(t.dtype)
        a = v.array
        want = _wide(t)
        assert a.shape == tuple(t.shape) and not a.flags.writeable, t.dtype
        assert a.dtype == want.dtype, t.dtype
        if a.dtype.kind in "fc":
            assert np.array_equal(a, want, equal_nan=True), t.dtype
            num = ~np.isnan(want.real)  # zeros keep their sign (a NaN's sign means nothing)
            assert np.array_equal(np.signbit(a.real[num]), np.signbit(want.real[num])), t.dtype
        else:
            assert np.array_equal(a, want), t.dtype
        d = v.data
        assert d.dtype == t.dtype and d.shape == t.shape
        assert tensor_bytes(d) == tensor_bytes(t), t.dtype  # bit for bit, NaN payloads too
        assert tensor_array(t).dtype == want.dtype  # a tensor's Value reads the same way
    z = Value(9, (2, 3), "bfloat16", payload=Zeros((2, 3), "bfloat16"))  # a cleared .grad
    assert z.array.dtype == np.float32 and not z.array.any() and z.array.shape == (2, 3)
    assert z.data.dtype == torch.bfloat16 and not z.data.any()
    assert z.stats == Stats(6, 0.0, 0.0, 0.0, 0.0, 0) and not z.array.flags.writeable


def test_an_array_is_a_view_of_the_stored_bytes_not_a_copy():
    blob = np.arange(6, dtype="<f4").tobytes() + b"\x00" * 8
    p = Bytes((2, 3), "float32", blob, 0, 24)
    a = p.array()
    assert np.shares_memory(a, np.frombuffer(blob, dtype="u1"))
    assert a.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    shifted = Bytes((2,), "float32", b"\x00" * 4 + blob, 8, 8)
    assert shifted.array().tolist() == [1.0, 2.0]
    assert Zeros((0, 4), "int64").array().shape == (0, 4)


