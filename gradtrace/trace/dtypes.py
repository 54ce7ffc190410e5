"""The dtypes a trace file may name: an allow-list from name to ``torch.dtype``, never a lookup."""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "dtype_from_name"]

#: Every dtype a reader accepts, by the name gradtrace writes (``str(dtype)`` without
#: ``torch.``). A name from a file is looked up here, never with ``getattr(torch, name)``:
#: that would hand back whatever ``torch`` has under the name (``torch.os``, ``torch.load``).
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "complex128": torch.complex128,
    "complex64": torch.complex64,
    "complex32": torch.complex32,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}

# Newer dtypes, kept only where this torch has them. The names are this module's own.
for _name in ("uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
              "float8_e5m2fnuz"):
    _dt = getattr(torch, _name, None)
    if isinstance(_dt, torch.dtype) and str(_dt) == f"torch.{_name}":
        DTYPES[_name] = _dt
del _name, _dt


def dtype_from_name(name) -> torch.dtype:
    """The dtype gradtrace wrote as ``name``; ValueError for any other name (or a non-string)."""
    dt = DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise ValueError(f"unknown dtype {name!r}")
    return dt
