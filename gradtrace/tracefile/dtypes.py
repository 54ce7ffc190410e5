"""The tensor dtypes a trace file may name: a table written here, never a lookup of the file's string."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "dtype_from_name", "dtype_name", "itemsize"]

# Names as gradtrace writes them (``str(dtype)`` without ``torch.``). Only the ones this
# torch has are kept, so an older torch reads what it can hold and refuses the rest.
_NAMES = (
    "float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32",
    "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
)

#: name -> torch.dtype, for every dtype a trace may hold.
DTYPES: dict[str, torch.dtype] = {}
for _name in _NAMES:
    _dt = getattr(torch, _name, None)  # a literal of ours, not a string from a file
    if isinstance(_dt, torch.dtype):
        DTYPES[_name] = _dt
del _name, _dt


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: object) -> torch.dtype:
    """The dtype a file names; ``ValueError`` for anything not in :data:`DTYPES`."""
    dt = DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise ValueError(f"unknown dtype {str(name)[:40]!r}")
    return dt


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
