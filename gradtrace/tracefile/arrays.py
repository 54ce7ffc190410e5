"""Stored values as numpy arrays, decoded without torch: raw little-endian bytes in, arrays out.

A trace keeps a value as its C-order bytes and a dtype name (see ``store``). Reading one
for a picture or a summary needs numpy only; torch is imported when a caller asks for the
tensor itself (:meth:`Payload.tensor`, used by ``Value.data``), so `gradtrace graph` starts
without it. Every dtype a trace may name decodes: those numpy holds as themselves (a
read-only view of the stored bytes, no copy), ``bfloat16`` and the ``float8`` kinds as
float32 and ``complex32`` as complex64 (every one of their values is exact there).

Sizes are the reader's to check before a payload is made (``checked.parse_values``): a
payload trusts that ``blob[offset:offset + nbytes]`` holds ``numel * itemsize`` bytes.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Payload", "Bytes", "Zeros", "NUMPY_NAMES", "tensor_array"]

#: The dtypes numpy holds as themselves (little-endian), by the name a trace gives them.
NUMPY_NAMES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "complex128": "<c16",
    "complex64": "<c8", "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
    "uint8": "u1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "bool": "?",
}


class Payload:
    """A value kept in full, not decoded yet: ``array()`` for numpy, ``tensor()`` for torch."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: str):
        self.shape = shape
        self.dtype = dtype

    def array(self) -> "np.ndarray":
        raise NotImplementedError

    def tensor(self) -> "torch.Tensor | None":
        raise NotImplementedError


class Bytes(Payload):
    """``nbytes`` raw bytes at ``offset`` of a step's value blob."""

    __slots__ = ("blob", "offset", "nbytes")

    def __init__(self, shape: tuple[int, ...], dtype: str, blob: bytes, offset: int, nbytes: int):
        super().__init__(shape, dtype)
        self.blob = blob
        self.offset = offset
        self.nbytes = nbytes

    def array(self) -> "np.ndarray":
        """A read-only array over the stored bytes (a copy only for the dtypes numpy lacks)."""
        import numpy as np

        numel = math.prod(self.shape)
        plain = NUMPY_NAMES.get(self.dtype)
        if plain is not None:
            a = np.frombuffer(self.blob, dtype=plain, count=numel, offset=self.offset)
        else:
            raw = np.frombuffer(self.blob, dtype="u1", count=self.nbytes, offset=self.offset)
            a = _widen(raw, self.dtype)
            a.flags.writeable = False
        return a.reshape(self.shape)

    def tensor(self) -> "torch.Tensor | None":
        """A new CPU tensor of the stored dtype (None if this torch has no such dtype)."""
        import torch

        from .dtypes import dtype_table

        dt = dtype_table().get(self.dtype)
        if dt is None:
            return None
        if self.nbytes == 0:
            return torch.empty(self.shape, dtype=dt)
        chunk = bytearray(self.blob[self.offset:self.offset + self.nbytes])
        return torch.frombuffer(chunk, dtype=dt).reshape(self.shape)


class Zeros(Payload):
    """A value stored as all zeros (a cleared ``.grad``): no bytes, made when asked for."""

    __slots__ = ()

    def array(self) -> "np.ndarray":
        import numpy as np

        a = np.zeros(self.shape, dtype=_numpy_kind(self.dtype))
        a.flags.writeable = False
        return a

    def tensor(self) -> "torch.Tensor | None":
        import torch

        from .dtypes import dtype_table

        dt = dtype_table().get(self.dtype)
        return None if dt is None else torch.zeros(self.shape, dtype=dt)


def _numpy_kind(dtype: str) -> str:
    """The numpy dtype a value of this trace dtype decodes to."""
    plain = NUMPY_NAMES.get(dtype)
    if plain is not None:
        return plain
    return "<c8" if dtype == "complex32" else "<f4"


def _widen(raw: "np.ndarray", dtype: str) -> "np.ndarray":
    """The bytes of a dtype numpy lacks, as the wider numpy dtype that holds its every value."""
    import numpy as np

    if dtype == "bfloat16":  # the upper half of a float32
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "complex32":  # a float16 real part, then a float16 imaginary part
        return raw.view("<f2").astype(np.float32).view(np.complex64)
    table = _float8_table(dtype)
    return table[raw]


#: The float8 formats: (exponent bits, mantissa bits, bias, how NaN and inf are written).
_FLOAT8 = {
    "float8_e4m3fn": (4, 3, 7, "fn"),        # no inf; NaN is S.1111.111
    "float8_e4m3fnuz": (4, 3, 8, "fnuz"),    # no inf, no -0; NaN is 0x80
    "float8_e5m2": (5, 2, 15, "ieee"),       # IEEE-like: inf and NaN at the top exponent
    "float8_e5m2fnuz": (5, 2, 16, "fnuz"),
}


@lru_cache(maxsize=None)
def _float8_table(dtype: str) -> "np.ndarray":
    """The float32 value of each of the 256 bytes of a float8 dtype (a lookup table)."""
    import numpy as np

    out = np.empty(256, dtype=np.float32)
    if dtype == "float8_e8m0fnu":  # an exponent only: 2**(b - 127); 0xff is NaN
        for b in range(256):
            out[b] = math.nan if b == 255 else math.ldexp(1.0, b - 127)
        return out
    if dtype not in _FLOAT8:
        raise ValueError(f"no decoding for dtype {dtype[:40]!r}")  # a literal of ours, never the file's
    ebits, mbits, bias, style = _FLOAT8[dtype]
    top = (1 << ebits) - 1
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> mbits) & top
        m = b & ((1 << mbits) - 1)
        nan = math.copysign(math.nan, sign)
        if style == "fnuz" and b == 0x80:
            out[b] = nan
            continue
        if style == "ieee" and e == top:
            out[b] = sign * math.inf if m == 0 else nan
            continue
        if style == "fn" and e == top and m == (1 << mbits) - 1:
            out[b] = nan
            continue
        if e == 0:
            out[b] = sign * math.ldexp(m, 1 - bias - mbits)
        else:
            out[b] = sign * math.ldexp((1 << mbits) + m, e - bias - mbits)
    return out


def tensor_array(t: Any) -> "np.ndarray":
    """A tensor's values as numpy, the way a stored value of its dtype decodes (the values the
    recorder and the analysis make from tensors read like the file's)."""
    import torch  # already imported: ``t`` is a tensor

    t = t.detach().resolve_conj().resolve_neg().cpu()
    try:
        return t.numpy()
    except TypeError:  # bfloat16, float8, complex32: numpy has no such dtype
        return t.to(torch.complex64 if t.is_complex() else torch.float32).numpy()
