"""The dtypes a trace may name (gradtrace/tracefile/dtypes.py): gradtrace's own table, no lookup."""

from __future__ import annotations

import warnings

import pytest
import torch

from gradtrace.tracefile import dtypes
from gradtrace.tracefile.dtypes import ITEMSIZES, dtype_from_name, dtype_name, dtype_table, itemsize


def test_the_table_holds_torchs_dtypes_by_the_names_gradtrace_writes():
    table = dtype_table()
    assert table is dtype_table()  # built once
    assert set(table) <= set(ITEMSIZES)
    for name, dt in table.items():
        assert isinstance(dt, torch.dtype) and str(dt) == f"torch.{name}"
        assert dtype_name(dt) == name and dtype_from_name(name) is dt
    assert {"float32", "float64", "float16", "bfloat16", "int64", "bool", "complex64"} <= set(table)


def test_the_item_sizes_are_torchs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32 is "experimental"
        for name, dt in dtype_table().items():
            assert ITEMSIZES[name] == itemsize(dt) == torch.empty(0, dtype=dt).element_size(), name


def test_dtypes_is_the_table_made_on_first_use():
    assert dtypes.DTYPES is dtype_table()
    with pytest.raises(AttributeError, match="has no attribute 'TABLE'"):
        dtypes.TABLE  # noqa: B018


@pytest.mark.parametrize("name", [
    "float",          # an alias torch has, but not a name gradtrace writes
    "torch.float32",  # the prefix is not part of the name
    "Tensor", "nn", "load", "__builtins__", "",  # attributes of torch that are not dtypes
    "FLOAT32",
])
def test_a_name_that_is_not_in_the_table_is_refused(name):
    with pytest.raises(ValueError) as e:
        dtype_from_name(name)
    assert str(e.value) == f"unknown dtype {name!r}"


def test_a_name_that_is_not_text_or_too_long_is_refused_in_short():
    for name in (["float32"], None, torch.float32):
        with pytest.raises(ValueError) as e:
            dtype_from_name(name)
        assert str(e.value) == f"unknown dtype {str(name)!r}"
    with pytest.raises(ValueError) as e:
        dtype_from_name("x" * 1000)
    assert str(e.value) == f"unknown dtype {'x' * 40!r}"
