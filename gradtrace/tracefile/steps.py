"""Decoding one stored step into a checked :class:`~gradtrace.tracefile.model.Step`.

A step row's ``body`` (JSON rows: ops, the backward pass and its nodes, events), its value
index (``vidx``) and its value bytes (``vals``) are read here, every field through
:mod:`~gradtrace.tracefile.checked`; references between them (an op's parent, a node's next
nodes, a value id) must point at something the step holds, and the graph must not loop.
Values stay undecoded bytes until they are read (see :mod:`~gradtrace.tracefile.arrays`).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import TraceFileError
from . import checked as ck
from .checked import Limits, Malformed
from .model import (
    ACCUMULATIONS, EVENT_KINDS, Backward, Event, GradNode, Op, Source, Step, TensorInfo, Value,
)
from .rows import BackwardRow, EventRow, NodeRow, OpRow, decode

__all__ = ["StepDecoder", "step_data_columns"]


def step_data_columns(version: int) -> str:
    """The columns a step is decoded from, as SQL: body, value index, value bytes, dropped ops
    (format 1 had no value index column: its index is in the body)."""
    return "body, vidx, vals, ops_dropped" if version >= 2 else "body, NULL, vals, ops_dropped"


class StepDecoder:
    """Turns step rows of one file into Steps. ``sources`` and ``tensors`` give the run's
    tables (read when a step first needs them)."""

    def __init__(self, path: str, version: int, limits: Limits,
                 sources: Callable[[], dict[int, Source]], tensors: Callable[[], dict[int, TensorInfo]]):
        self.path = path
        self.version = version
        self.limits = limits
        self._sources = sources
        self._tensors = tensors
        #: step index -> DDP's buckets in it (the reader sets it from the run's meta)
        self.buckets: Callable[[int], Any] = lambda idx: None

    def decode(self, idx: int, row: tuple) -> tuple[Step, int]:
        """The step from its row (:func:`step_data_columns`), checked, and about how many bytes
        of memory it holds; a row that is not what gradtrace writes raises one line."""
        body_text, vidx, blob, dropped = row
        where = f"step {idx}"
        try:
            body = ck.json_value(body_text, f"{where}'s body")
            if not isinstance(body, dict):
                raise Malformed(f"{where}'s body is not an object")
            if vidx is None:
                ints = list(ck.int_list(body.get("values", []), f"{where}'s value index"))
            else:
                ints = ck.from_int64s(vidx, f"{where}'s value index")
            if blob is not None and not isinstance(blob, bytes):
                raise Malformed(f"{where}'s values are not bytes")
            vals, by_tid, size = ck.parse_values(ints, blob or b"", body, self.limits, where)
            dropped = ck.integer(dropped or 0, f"{where}'s dropped-ops count", 0)
            step = _Body(self, idx, body, vals, where).step(by_tid, dropped)
            # What the step holds in memory: its values' bytes, and its decoded rows (Python
            # objects several times the size of their JSON text).
            return step, size + 4 * len(body_text)
        except Malformed as e:
            msg = str(e)
            for head, repl in ((f"{where}: ", ""), (f"{where}'s ", "its ")):
                if msg.startswith(head):
                    msg = repl + msg[len(head):]
            raise TraceFileError(self.path, f"step {idx} is corrupt: {msg}; the file is damaged or "
                                            "was not written by gradtrace: record the run again") from None
        except (RecursionError, MemoryError, OverflowError) as e:
            raise TraceFileError(self.path, f"{where} cannot be read ({type(e).__name__}); the "
                                            "file is damaged: record the run again") from None


class _Body:
    """One step's body being read: its ops, backward pass and events, sharing the step's
    values (by vid) and the run's source lines."""

    def __init__(self, decoder: StepDecoder, idx: int, body: dict, vals: dict[int, Value], where: str):
        self.decoder = decoder
        self.idx = idx
        self.body = body
        self.vals = vals
        self.where = where
        self.version = decoder.version
        self.sources = decoder._sources()

    def step(self, by_tid: dict[int, Value], dropped: int) -> Step:
        ops = self.ops()
        backward = self.backward()
        events = self.events()
        return Step(index=self.idx, ops=tuple(ops), backward=backward, events=tuple(events),
                    values=by_tid, tensors=self.decoder._tensors(), ops_dropped=dropped,
                    buckets=self.decoder.buckets(self.idx) if any(e.kind == "allreduce" for e in events) else None)

    def src(self, sid: Any, what: str) -> Source | None:
        return None if sid is None else self.sources.get(ck.integer(sid, f"{what}'s source id"))

    def vv(self, x: Any, what: str) -> Value | None:
        if x is None:
            return None
        v = self.vals.get(ck.integer(x, what))
        if v is None:
            raise Malformed(f"{what} refers to value {x}, which the step does not hold")
        return v

    def ops(self) -> list[Op]:
        where, idx, src = self.where, self.idx, self.src
        ops = []
        seen: set[int] = set()
        for raw in _rows(self.body, "ops", where):
            r = decode(OpRow, raw, f"{where}: an op", self.version)
            w = f"{where}: op {r.idx!r:.20}"
            i = ck.integer(r.idx, f"{where}: an op's index", 0)
            if i in seen:
                raise Malformed(f"{w} appears twice")
            seen.add(i)
            if not isinstance(r.args, list) or not isinstance(r.kwargs, dict):
                raise Malformed(f"{w}'s arguments are not a list and an object")
            ops.append(Op(
                index=i, seq=ck.integer(r.seq, f"{w}'s seq"), step=idx, name=ck.text(r.name, f"{w}'s name"),
                target=ck.text(r.target, f"{w}'s target"), inputs=ck.int_list(r.inputs, f"{w}'s inputs"),
                outputs=ck.int_list(r.outputs, f"{w}'s outputs"),
                args=tuple(ck.decode_arg(a, f"{w}'s arguments") for a in r.args),
                kwargs={k: ck.decode_arg(a, f"{w}'s arguments") for k, a in r.kwargs.items()},
                grad_fn=ck.opt_text(r.grad_fn, f"{w}'s grad_fn"),
                module=ck.opt_text(r.module, f"{w}'s module"),
                parent=ck.opt_integer(r.parent, f"{w}'s parent"),
                is_graph=ck.flag(r.is_graph, f"{w}'s is_graph"),
                source=src(r.sid, w)))
        ops.sort(key=lambda o: o.index)
        parent_of = {o.index: o.parent for o in ops}
        for o in ops:  # a custom Function's inner ops point at it; the chain must end
            p, hops = o.parent, 0
            while p is not None:
                if p not in parent_of or hops >= len(ops):
                    raise Malformed(f"{where}: op {o.index}'s parent op {o.parent} is not in the "
                                    "step, or its parents form a loop")
                p, hops = parent_of[p], hops + 1
        return ops

    def backward(self) -> Backward | None:
        body, vv = self.body, self.vv
        if not body.get("backward"):
            return None
        w = f"{self.where}'s backward pass"
        b = decode(BackwardRow, body["backward"], w, self.version)
        raw_nodes = _rows(body, "nodes", self.where)
        n = len(raw_nodes)
        nodes = []
        for pos, raw in enumerate(raw_nodes):
            r = decode(NodeRow, raw, f"{w}: a node", self.version)
            wn = f"{w}: node {pos}"
            if r.nid != pos:
                raise Malformed(f"{wn} has id {r.nid!r:.20}; nodes are numbered in order")
            if not isinstance(r.next, list) or not isinstance(r.grad_out_vids, list) \
                    or not isinstance(r.grad_in_vids, list):
                raise Malformed(f"{wn}'s next nodes or gradients are not lists")
            for x in r.next:  # topological from the root: every edge points further on
                if x is not None and (type(x) is not int or not pos < x < n):
                    raise Malformed(f"{wn} points back to node {x!r:.20} (the graph must not loop)")
            nodes.append(GradNode(
                nid=pos, name=ck.text(r.name, f"{wn}'s name"), op=ck.opt_integer(r.op, f"{wn}'s op"),
                variable=ck.opt_integer(r.variable, f"{wn}'s variable"), next=tuple(r.next),
                order=ck.opt_integer(r.exec_order, f"{wn}'s execution order", 0),
                grad_outputs=tuple(vv(x, f"{wn}'s gradient") for x in r.grad_out_vids),
                grad_inputs=tuple(vv(x, f"{wn}'s gradient") for x in r.grad_in_vids)))
        if not isinstance(b.result_vids, list):
            raise Malformed(f"{w}'s results are not a list")
        return Backward(seq=ck.integer(b.seq, f"{w}'s seq"), step=self.idx,
                        api=ck.text(b.api, f"{w}'s api"),
                        roots=ck.int_list(b.roots, f"{w}'s roots"), nodes=tuple(nodes),
                        source=self.src(b.sid, w), root_value=vv(b.root_vid, f"{w}'s root value"),
                        inputs=ck.int_list(b.inputs, f"{w}'s inputs"),
                        results=tuple(vv(x, f"{w}'s result") for x in b.result_vids),
                        left_out=ck.integer(b.left_out or 0, f"{w}'s left-out count", 0))

    def events(self) -> list[Event]:
        where, vv, version = self.where, self.vv, self.version
        events = []
        for raw in _rows(self.body, "events", where):
            r = decode(EventRow, raw, f"{where}: an event", version)
            w = f"{where}: event {r.seq!r:.20}"
            if r.kind not in EVENT_KINDS:
                raise Malformed(f"{w} has kind {str(r.kind)[:20]!r}, not one of {', '.join(EVENT_KINDS)}")
            idiom = ck.opt_text(r.idiom, f"{w}'s idiom") or ""
            before = vv(r.before_vid, f"{w}'s value before")
            fresh = ck.opt_flag(r.fresh, f"{w}'s fresh")
            if version >= 3:
                acc, through_data = r.accumulation, ck.flag(r.through_data, f"{w}'s through_data")
                if acc not in (ACCUMULATIONS if r.kind == "accumulate" else (None,)):
                    raise Malformed(f"{w}'s accumulation is {str(acc)[:20]!r}, not "
                                    + (", ".join(ACCUMULATIONS) if r.kind == "accumulate" else "null"))
            else:
                acc, through_data = _old_event_fields(r.kind, idiom, fresh, before)
            events.append(Event(
                seq=ck.integer(r.seq, f"{w}'s seq"), step=self.idx, kind=r.kind,
                tensor=ck.integer(r.tensor, f"{w}'s tensor"), idiom=idiom,
                before=before, after=vv(r.after_vid, f"{w}'s value after"),
                source=self.src(r.sid, w), via=ck.opt_text(r.via, f"{w}'s via"), fresh=fresh,
                incoming=vv(r.incoming_vid, f"{w}'s incoming gradient"),
                inferred=ck.flag(r.inferred or 0, f"{w}'s inferred"),
                accumulation=acc, through_data=through_data))
        return events


def _old_event_fields(kind: str, idiom: str, fresh: bool | None,
                      before: Value | None) -> tuple[str | None, bool]:
    """An event's ``accumulation`` and ``through_data`` in files of formats 1 and 2, which did
    not store them: the recorder's idiom says both (``fresh``, ``added onto zeros``,
    ``added``; ``p.data.sub_()``); an accumulation with another idiom is told by its value."""
    through_data = ".data" in idiom
    if kind != "accumulate":
        return None, through_data
    if fresh or before is None:
        return "fresh", through_data
    known = {"added onto zeros": "zeros", "added": "added"}.get(idiom)
    if known is not None:
        return known, through_data
    if before.array is not None:
        zeros = bool((before.array == 0).all())
    else:
        zeros = before.stats.numel > 0 and before.stats.min == 0 and before.stats.max == 0
    return ("zeros" if zeros else "added"), through_data


def _rows(body: dict, key: str, where: str) -> list:
    rows = body.get(key) or []
    if not isinstance(rows, list):
        raise Malformed(f"{where}'s {key} are not a list of rows")
    return rows
