"""The tensor dtypes a trace file may name: a table written here, never a lookup of the file's string."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "ITEMSIZES", "dtype_table", "dtype_from_name", "dtype_name", "itemsize"]

# Names as gradtrace writes them (``str(dtype)`` without ``torch.``). Only the ones this
# torch has are kept, so an older torch reads what it can hold and refuses the rest.
_NAMES = (
    "float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32",
    "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
)

#: Bytes per element of each dtype a trace may name: what a reader sizes a value by before
#: it allocates anything, without importing torch.
ITEMSIZES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e4m3fnuz": 1,
    "float8_e5m2": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
}
assert set(ITEMSIZES) == set(_NAMES)


@lru_cache(maxsize=None)
def dtype_table() -> dict[str, "torch.dtype"]:
    """name -> torch.dtype, for every dtype a trace may hold (built on first use: importing
    this module does not import torch). ``DTYPES`` is the same table."""
    import torch

    table = {}
    for name in _NAMES:
        dt = getattr(torch, name, None)  # a literal of ours, not a string from a file
        if isinstance(dt, torch.dtype):
            table[name] = dt
    return table


def __getattr__(name: str):
    if name == "DTYPES":  # PEP 562: the table is made when first asked for
        return dtype_table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: object) -> torch.dtype:
    """The dtype a file names; ``ValueError`` for anything not in :data:`DTYPES`."""
    dt = dtype_table().get(name) if isinstance(name, str) else None
    if dt is None:
        raise ValueError(f"unknown dtype {str(name)[:40]!r}")
    return dt


def itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize  # torch >= 2.1 (the oldest pyproject.toml allows)
