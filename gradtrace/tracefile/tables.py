"""The run's tables besides the steps: ``meta`` (how the run went), ``source`` and ``tensor``.

Each reader takes ``q`` (a query that turns SQLite errors into one line about the file) and
raises :class:`~gradtrace.tracefile.checked.Malformed` for anything gradtrace does not
write; the :class:`~gradtrace.tracefile.reader.Trace` names the file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from . import checked as ck
from .checked import Limits, Malformed
from .model import RunInfo, Source, TensorInfo
from .ranks import RANK_LIMIT
from .rows import SourceRow, TensorRow, decode
from .schema import FORMAT_VERSION

__all__ = ["Query", "read_info", "read_sources", "read_tensors", "tensor_info"]

#: ``q(sql, args)``: the rows of one query.
Query = Callable[..., list[tuple]]

_STATUSES = ("running", "completed", "raised", "exited", "interrupted")


def read_info(q: Query) -> RunInfo:
    """How the run went, from the ``meta`` table."""
    meta = {}
    for k, v in q("SELECT key, value FROM meta"):
        meta[ck.text(k, "a meta key")] = ck.json_value(v, f"meta {str(k)[:40]!r}")

    def get(key, check, default=None):
        v = meta.get(key)
        return default if v is None else check(v, f"meta {key!r}")

    status = get("status", ck.text, "running")
    if status not in _STATUSES:
        raise Malformed(f"meta 'status' is {status[:40]!r}, not one of {', '.join(_STATUSES)}")
    argv = get("argv", lambda v, w: [ck.text(a, w) for a in (v if isinstance(v, list) else [v])], [])
    config = get("config", _obj, {})
    modules = get("modules", _obj, {})
    for k, v in modules.items():
        ck.text(v, f"meta 'modules' of {k[:40]!r}")
    return RunInfo(
        format_version=get("version", ck.integer, FORMAT_VERSION),
        gradtrace_version=get("gradtrace_version", ck.text, ""),
        torch_version=get("torch_version", ck.text, ""),
        created=get("created", ck.text, ""),
        script=get("script", ck.text),
        argv=tuple(argv),
        status=status,
        exit_code=get("exit_code", _exit_code),
        error=get("error", ck.text),
        config=config,
        steps_seen=get("steps_seen", lambda v, w: ck.integer(v, w, 0), 0),
        ops_dropped=get("ops_dropped", lambda v, w: ck.integer(v, w, 0), 0),
        modules=modules,
        policy=get("policy", _obj, {}),
        kept=get("kept", _obj, {}),
        unrecorded=get("unrecorded", _counts, {}),
        distributed=get("distributed", _distributed, {}),
        optimizers=get("optimizers", ck.optimizers, ()),
    )


def read_sources(q: Query) -> dict[int, Source]:
    """The lines of the user's code, by sid."""
    out = {}
    for r in q(f"SELECT {', '.join(SourceRow._fields)} FROM source"):
        r = SourceRow(*r)
        w = f"source line {r.sid}"
        out[ck.integer(r.sid, "a source id")] = Source(
            ck.text(r.file, f"{w}'s file"), ck.integer(r.line, f"{w}'s line number"),
            ck.opt_text(r.code, f"{w}'s code") or "",
            ck.opt_text(r.function, f"{w}'s function") or "")
    return out


def read_tensors(q: Query, version: int, limits: Limits) -> dict[int, TensorInfo]:
    """Every tensor of the run by tid: the ``tensor`` table, then each step's ``tensors``."""
    rows: dict[int, TensorInfo] = {}
    for r in q(f"SELECT {', '.join(TensorRow._fields)} FROM tensor"):
        tid = ck.integer(r[0], "a tensor id")
        row = TensorRow(*r)
        shape = ck.json_value(row.shape, f"tensor {tid}'s shape")
        rows[tid] = tensor_info(row._replace(shape=shape), f"tensor {tid}", limits)
    if version >= 2:
        for idx, raw in q("SELECT idx, tensors FROM step WHERE tensors IS NOT NULL ORDER BY idx"):
            where = f"step {idx}'s tensors"
            listed = ck.json_value(raw, where)
            if not isinstance(listed, list):
                raise Malformed(f"{where} is not a list")
            for row in listed:
                if isinstance(row, list) and len(row) == 2:  # a name given later
                    tid = ck.integer(row[0], f"{where}: a tensor id")
                    name = ck.opt_text(row[1], f"{where}: tensor {tid}'s name")
                    if tid in rows:
                        rows[tid] = dataclasses.replace(rows[tid], name=name)
                else:
                    info = tensor_info(decode(TensorRow, row, f"{where}: a row", version),
                                       where, limits)
                    rows[info.tid] = info
    return {tid: rows[tid] for tid in sorted(rows)}


def tensor_info(r: TensorRow, where: str, limits: Limits) -> TensorInfo:
    """One tensor row, checked."""
    tid = ck.integer(r.tid, f"{where}: a tensor id")
    w = f"{where}: tensor {tid}"
    if r.role not in ("param", "input", "activation"):
        raise Malformed(f"{w} has role {str(r.role)[:20]!r}, not param, input or activation")
    return TensorInfo(tid, ck.opt_text(r.name, f"{w}'s name"), r.role,
                      ck.shape(r.shape, f"{w}'s shape", limits), ck.text(r.dtype, f"{w}'s dtype"),
                      ck.flag(r.requires_grad, f"{w}'s requires_grad"))


def _distributed(v: Any, what: str) -> dict:
    """meta 'distributed': a rank of a world (whole numbers) and a backend name."""
    d = _obj(v, what)
    world = ck.integer(d.get("world_size"), f"{what} world_size", 1, RANK_LIMIT)
    rank = ck.integer(d.get("rank"), f"{what} rank", 0)
    if rank >= world:
        raise Malformed(f"{what}: rank {rank} is not below world_size {world}")
    local = d.get("local_rank")
    backend = d.get("backend")
    out: dict[str, Any] = {"rank": rank, "world_size": world,
                           "local_rank": rank if local is None else ck.integer(local, f"{what} local_rank", 0),
                           "backend": None if backend is None else ck.text(backend, f"{what} backend")[:40]}
    if d.get("buckets") is not None:
        out["buckets"] = _buckets(d["buckets"], f"{what} buckets")
    return out


#: At most this many bucket layouts (DDP has one, then the rebuilt one) and ids in them.
MAX_LAYOUTS = 16
MAX_BUCKET_IDS = 1 << 20


def _buckets(v: Any, what: str) -> list[dict]:
    """meta 'distributed' 'buckets': DDP's bucket layouts, from the step each began at
    (record/ddp.py): ``from_step``, ``params`` (a list of lists of tids, or null), ``bytes``
    (one size per bucket, or null), ``rebuilt``."""
    if not isinstance(v, list) or len(v) > MAX_LAYOUTS:
        raise Malformed(f"{what} is not a list of at most {MAX_LAYOUTS} layouts")
    out: list[dict] = []
    ids = 0
    for i, raw in enumerate(v):
        w = f"{what} [{i}]"
        e = _obj(raw, w)
        params = e.get("params")
        if params is not None:
            if not isinstance(params, list) or len(params) > MAX_BUCKET_IDS:
                raise Malformed(f"{w} params is not a list of buckets")
            params = [list(ck.int_list(g, f"{w} bucket {j}")) for j, g in enumerate(params)]
            ids += sum(len(g) for g in params)
            if ids > MAX_BUCKET_IDS:
                raise Malformed(f"{what} holds more than {MAX_BUCKET_IDS} ids")
        sizes = e.get("bytes")
        if sizes is not None:
            if not isinstance(sizes, list) or len(sizes) > MAX_BUCKET_IDS:
                raise Malformed(f"{w} bytes is not a list of sizes")
            sizes = [ck.integer(x, f"{w} bytes", 0) for x in sizes]
        out.append({"from_step": ck.integer(e.get("from_step"), f"{w} from_step", 0),
                    "params": params, "bytes": sizes, "rebuilt": ck.flag(e.get("rebuilt", 0), f"{w} rebuilt")})
    return out


def _exit_code(v: Any, what: str) -> int:
    """A whole number; or a boolean, as gradtrace wrote ``sys.exit(True)`` / ``sys.exit(False)``
    before 2026-12-04 (the process exited 1 / 0)."""
    return int(v) if type(v) is bool else ck.integer(v, what)


def _counts(v: Any, what: str) -> dict[str, int]:
    """An object of counts (``unrecorded``): names that are text, counts that are integers."""
    if not isinstance(v, dict) or len(v) > 64:
        raise Malformed(f"{what} is not an object of counts")
    return {ck.text(k, f"{what}'s key")[:64]: ck.integer(n, f"{what} {str(k)[:40]!r}", 0)
            for k, n in v.items()}


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise Malformed(f"{what} is not an object")
    return v
