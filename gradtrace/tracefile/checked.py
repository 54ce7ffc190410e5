"""Reading what a trace file claims, checked: types, references and sizes before anything is built.

A trace may come from a stranger, so every field read from it goes through one of the
checks below, and the value index is walked by a loop that advances on every entry and
sizes every tensor against its bytes and a limit before allocating. A check that fails
raises :class:`Malformed` with what is wrong where; the reader turns that into a
:class:`~gradtrace.errors.TraceFileError` naming the file.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from .arrays import Bytes, Zeros
from .dtypes import ITEMSIZES
from .model import OptimizerInfo, ParamGroup, Stats, Value

__all__ = ["Malformed", "Limits", "json_value", "integer", "opt_integer", "text", "opt_text",
           "flag", "opt_flag", "int_list", "row", "shape", "number", "decode_arg", "parse_values",
           "from_int64s", "to_int64s", "MAX_NDIM", "MAX_DEPTH"]

#: Dimensions a shape may have (torch itself stops at 64).
MAX_NDIM = 64
#: How deeply an op's arguments may nest (lists in tuples in dicts ...).
MAX_DEPTH = 32


class Malformed(Exception):
    """Internal: one part of a file is not what gradtrace writes; the message says what."""


@dataclass(frozen=True)
class Limits:
    """What a reader allocates for a file, at most.

    - ``max_numel``: the most elements any shape in the file may claim.
    - ``zeros_numel``: an all-zeros value (a cleared ``.grad``, stored without bytes) is
      built as a tensor up to this many elements; a larger one reads as statistics only.
    - ``step_zeros_numel``: the same, summed over one step.
    """

    max_numel: int = 2 ** 34
    zeros_numel: int = 1 << 22
    step_zeros_numel: int = 1 << 24


def json_value(raw: Any, what: str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{what} is not UTF-8 text") from None
    if not isinstance(raw, str):
        raise Malformed(f"{what} is {_kind(raw)}, not JSON text")
    try:
        return json.loads(raw)
    except RecursionError:
        raise Malformed(f"{what} nests too deeply") from None
    except ValueError as e:
        raise Malformed(f"{what} is not JSON ({str(e)[:60]})") from None


def _kind(x: Any) -> str:
    if x is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "text", bytes: "bytes",
            list: "a list", dict: "an object"}.get(type(x), type(x).__name__)


def integer(x: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if type(x) is not int:
        raise Malformed(f"{what} is {_kind(x)}, not a whole number")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise Malformed(f"{what} is {x}, out of range")
    return x


def opt_integer(x: Any, what: str, lo: int | None = None) -> int | None:
    return None if x is None else integer(x, what, lo)


def text(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise Malformed(f"{what} is {_kind(x)}, not text")
    return x


def opt_text(x: Any, what: str) -> str | None:
    return None if x is None else text(x, what)


def flag(x: Any, what: str) -> bool:
    if x in (0, 1) and type(x) in (int, bool):
        return bool(x)
    raise Malformed(f"{what} is {x!r:.20}, not 0 or 1")


def opt_flag(x: Any, what: str) -> bool | None:
    return None if x is None else flag(x, what)


def number(x: Any, what: str) -> float:
    if type(x) in (int, float):
        return float(x)
    raise Malformed(f"{what} is {_kind(x)}, not a number")


def int_list(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, list):
        raise Malformed(f"{what} is {_kind(x)}, not a list of ids")
    for v in x:
        if type(v) is not int:
            raise Malformed(f"{what} holds {_kind(v)}, not ids")
    return tuple(x)


#: At most this many optimizers, groups and hyper-parameters are read from a file.
MAX_OPTIMIZERS = 64
MAX_HYPER = 64


def _hyper(x: Any, what: str) -> float | bool | tuple[float, ...] | None:
    if x is None or type(x) is bool:
        return x
    if isinstance(x, list):
        if len(x) > 16:
            raise Malformed(f"{what} has {len(x)} numbers, more than 16")
        return tuple(number(v, what) for v in x)
    return number(x, what)


def optimizers(x: Any, what: str) -> tuple[OptimizerInfo, ...]:
    """meta 'optimizers': ``[{"kind", "step", "source", "groups": [{"params": [tid ...],
    "frozen": [tid ...], "hyper": {name: number | bool | null | [numbers]}}]}]``, every
    field checked."""
    if not isinstance(x, list) or len(x) > MAX_OPTIMIZERS:
        raise Malformed(f"{what} is not a list of at most {MAX_OPTIMIZERS} optimizers")
    out = []
    for i, o in enumerate(x):
        w = f"{what}[{i}]"
        if not isinstance(o, dict) or not isinstance(o.get("groups"), list) \
                or len(o["groups"]) > MAX_OPTIMIZERS:
            raise Malformed(f"{w} is not an optimizer with a list of param groups")
        groups = []
        for j, g in enumerate(o["groups"]):
            gw = f"{w}'s group {j}"
            hyper = g.get("hyper", {}) if isinstance(g, dict) else None
            if not isinstance(hyper, dict) or len(hyper) > MAX_HYPER:
                raise Malformed(f"{gw} is not a group with at most {MAX_HYPER} hyper-parameters")
            groups.append(ParamGroup(int_list(g.get("params"), f"{gw}'s params"),
                                     {text(k, f"{gw}'s hyper-parameter name")[:40]:
                                      _hyper(v, f"{gw}'s {str(k)[:40]}") for k, v in hyper.items()},
                                     int_list(g.get("frozen", []), f"{gw}'s frozen params")))
        out.append(OptimizerInfo(text(o.get("kind"), f"{w}'s kind")[:80],
                                 integer(o.get("step"), f"{w}'s step", 0),
                                 opt_integer(o.get("source"), f"{w}'s source", 0), tuple(groups)))
    return tuple(out)


def row(x: Any, n: int, what: str) -> list:
    if not isinstance(x, list):
        raise Malformed(f"{what} is {_kind(x)}, not a row")
    if len(x) != n:
        raise Malformed(f"{what} has {len(x)} fields, not {n}")
    return x


def shape(x: Any, what: str, limits: Limits) -> tuple[int, ...]:
    if not isinstance(x, list) or len(x) > MAX_NDIM:
        raise Malformed(f"{what} is not a shape (a list of at most {MAX_NDIM} sizes)")
    for v in x:
        if type(v) is not int or v < 0:
            raise Malformed(f"{what} holds {v!r:.20}, not a size")
    _numel(x, what, limits)
    return tuple(x)


def _numel(sizes, what: str, limits: Limits) -> int:
    n = math.prod(sizes)
    if n > limits.max_numel:
        raise Malformed(f"{what} claims {n} elements, more than the limit of {limits.max_numel}")
    return n


_ARG_KEYS = {"tuple", "dict", "slice", "dtype", "device", "ellipsis", "repr"}


def decode_arg(a: Any, what: str, depth: int = 0):
    """An op argument as the model has it (see the schema in ``trace.store``): tensors as
    ``{"tensor": tid}``, tuples as tuples; anything gradtrace does not write is refused."""
    if depth > MAX_DEPTH:
        raise Malformed(f"{what} nests deeper than {MAX_DEPTH}")
    if isinstance(a, str):
        if a.startswith("$t"):
            try:
                return {"tensor": int(a[2:])}
            except ValueError:
                raise Malformed(f"{what} holds {a[:20]!r}, not a tensor id") from None
        return a[1:] if a.startswith("$$") else a
    if a is None or type(a) in (bool, int, float):
        return a
    if isinstance(a, list):
        return [decode_arg(x, what, depth + 1) for x in a]
    if isinstance(a, dict) and len(a) == 1:
        (key, v), = a.items()
        if key == "tuple" and isinstance(v, list):
            return tuple(decode_arg(x, what, depth + 1) for x in v)
        if key == "dict" and isinstance(v, dict):
            return {"dict": {k: decode_arg(x, what, depth + 1) for k, x in v.items()}}
        if key == "slice" and isinstance(v, list) and len(v) == 3:
            return {"slice": [decode_arg(x, what, depth + 1) for x in v]}
        if key in ("dtype", "device", "repr") and isinstance(v, str):
            return a
        if key == "ellipsis" and v is True:
            return a
    raise Malformed(f"{what} holds {_kind(a)} that gradtrace does not write")


def from_int64s(blob: Any, what: str) -> list[int]:
    if not isinstance(blob, bytes) or len(blob) % 8:
        raise Malformed(f"{what} is not a list of 8-byte integers")
    a = array("q")
    a.frombytes(blob)
    if a.itemsize != 8:
        raise Malformed("this platform has no 8-byte array type")
    if sys.byteorder != "little":
        a.byteswap()
    return a.tolist()


def to_int64s(ints: list[int]) -> bytes:
    """What :func:`from_int64s` reads: little-endian 8-byte integers (the writer's side)."""
    a = array("q", ints)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def parse_values(ints: list[int], blob: bytes, body: dict, limits: Limits,
                 where: str) -> tuple[dict[int, Value], dict[int, Value], int]:
    """The step's values from its index (``vidx``), checked entry by entry before any
    tensor is built: (by vid, by tid, bytes built). The loop advances at least 7 ints per
    entry, so it ends for any input."""
    dtypes = body.get("dtypes", [])
    floats = body.get("stats", [])
    counts = body.get("stats_int", [])
    if not isinstance(dtypes, list) or not isinstance(floats, list) or not isinstance(counts, list):
        raise Malformed(f"{where}: the value index's dtypes or statistics are not lists")
    kinds = [d if isinstance(d, str) and d in ITEMSIZES else None for d in dtypes]
    vals: dict[int, Value] = {}
    by_tid: dict[int, Value] = {}
    i = si = built = zeros = 0
    n = len(ints)
    while i < n:
        if i + 7 > n:
            raise Malformed(f"{where}: the value index is cut short")
        vid, tid, kind, code, offset, nbytes, ndim = ints[i:i + 7]
        if not 0 <= ndim <= MAX_NDIM:
            raise Malformed(f"{where}: value {vid} claims {ndim} dimensions (at most {MAX_NDIM})")
        if i + 7 + ndim > n:
            raise Malformed(f"{where}: the value index is cut short")
        sizes = ints[i + 7:i + 7 + ndim]
        i += 7 + ndim
        what = f"{where}: value {vid}"
        if any(s < 0 for s in sizes):
            raise Malformed(f"{what} has a negative size")
        numel = _numel(sizes, what, limits)
        dt = kinds[code] if 0 <= code < len(kinds) else None
        if dt is None:
            raise Malformed(f"{what} has an unknown dtype")
        shp = tuple(sizes)
        size = ITEMSIZES[dt]
        if kind == 0:
            if offset < 0 or nbytes != numel * size or offset + nbytes > len(blob):
                raise Malformed(f"{what} claims {nbytes} bytes at {offset}; its shape {list(shp)} "
                                f"needs {numel * size} of the {len(blob)} stored")
            # Its own bytes (a value kept longer than its step holds no more than itself),
            # decoded when first read (numpy for .array, torch for .data), never before.
            v = Value(vid, shp, dt, payload=Bytes(shp, dt, blob[offset:offset + nbytes], 0, nbytes))
            built += nbytes
        elif kind == 2:
            if numel <= limits.zeros_numel and zeros + numel <= limits.step_zeros_numel:
                zeros += numel
                v = Value(vid, shp, dt, None, _zero_stats(numel), payload=Zeros(shp, dt))
                built += numel * size
            else:  # a large cleared gradient: its statistics are known without building it
                v = Value(vid, shp, dt, None, _zero_stats(numel))
        elif kind == 1:
            if 4 * si + 4 > len(floats) or 2 * si + 2 > len(counts):
                raise Malformed(f"{what}: its statistics are missing")
            norm, mean, lo, hi = [math.nan if x is None else number(x, f"{what}'s statistics")
                                  for x in floats[4 * si:4 * si + 4]]
            cnt, nonfinite = counts[2 * si:2 * si + 2]
            integer(cnt, f"{what}'s element count", 0)
            opt_integer(nonfinite, f"{what}'s non-finite count", 0)
            si += 1
            v = Value(vid, shp, dt, None, Stats(cnt, norm, mean, lo, hi, nonfinite or 0))
        else:
            raise Malformed(f"{what} has unknown kind {kind}")
        if vid in vals:
            raise Malformed(f"{where}: value {vid} appears twice")
        vals[vid] = v
        if tid >= 0:
            by_tid.setdefault(tid, v)
    return vals, by_tid, built



def _zero_stats(numel: int) -> Stats:
    """The statistics of an all-zeros value (NaN for an empty one, as for any empty value)."""
    if numel == 0:
        nan = float("nan")
        return Stats(0, nan, nan, nan, nan, 0)
    return Stats(numel, 0.0, 0.0, 0.0, 0.0, 0)
