"""The explorer's data: plain JSON-ready dicts built from a trace (and its check report).

The page holds every step's scalars (loss and the zero / accumulate / update counts) and,
up to a size budget, the full data of some steps: the steps that findings and failed checks
point at, then an even sample of the rest (:func:`gradtrace.analysis.sampling.subsample`),
the first and last kept. Each distinct value (an input batch, a parameter that did not
change, a gradient passed on unchanged) is in the page once, in a table the steps refer to
by number (:class:`Values`), and the budget counts it once. `gradtrace serve` sends any other
step on demand, built by the same :func:`step_data`, its values inline.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Mapping, Callable

from ..analysis.graph import build_graph
from ..analysis.sampling import subsample
from ..errors import GradtraceError, TraceFileError
from ..formatting import number as fmt_number
from ..formatting import shape as fmt_shape
from ..version import __version__
from .explorer_graph import OPTIONS, Geometry, geometry, shape_key
from .graph_labels import node_label
from .graph_options import LEGEND

__all__ = ["scalars", "page_data", "step_data", "Shapes", "Values", "DEFAULT_BUDGET", "FULL_VALUES",
           "plain_verdict", "script_lines", "FINDING_TITLES"]

#: Bytes of per-step data (graph values, inspector values, source notes) a page holds.
DEFAULT_BUDGET = 8 << 20
#: A tensor is kept in full for the inspector up to this many elements (else statistics).
FULL_VALUES = 4096

_COUNTS = ("ops", "backward_nodes", "accumulate_fresh", "accumulate_added", "accumulate_on_top",
           "zeroings", "updates", "grad_writes")


def scalars(trace) -> list[dict[str, Any]]:
    """Every step's scalars, in step order: ``index``, ``loss``, ``recorded`` (the step's full
    data is in the trace), ``backward`` and the counts of :data:`_COUNTS`.

    The one place the explorer asks for them. A step recorded in full gives its row of the
    step table; a step the recording policy kept as scalars only (long runs) gives its loss
    and what its per-step scalars say: the accumulations by kind and the parameters updated
    (the other counts are 0: not recorded)."""
    rows = {r["index"]: r for r in trace.step_rows()}
    reader = getattr(trace, "scalars", None)
    sc = reader() if callable(reader) else None
    out = []
    if sc is not None and len(sc) > len(rows):
        counts = sc.counts()
        for i, index in enumerate(sc.steps.tolist()):
            r = rows.get(index)
            if r is not None:
                out.append(_row(r, True))
                continue
            loss = float(sc.loss[i])
            fresh, zeros, added = (int(counts[k][i]) for k in ("fresh", "zeros", "added"))
            out.append(_row({"index": index, "loss": None if math.isnan(loss) else loss,
                             "has_backward": fresh + zeros + added > 0,
                             "accumulate_fresh": fresh, "accumulate_added": zeros + added,
                             "accumulate_on_top": added, "updates": int(counts["updated"][i])},
                            False))
        return out
    return [_row(r, True) for r in rows.values()]


def _row(r: Mapping[str, Any], recorded: bool) -> dict[str, Any]:
    loss = r.get("loss")
    return {"index": r["index"], "loss": _num(loss),
            "loss_text": None if loss is None else fmt_number(loss),
            "backward": bool(r.get("has_backward", r.get("backward", False))),
            "recorded": recorded, **{k: int(r.get(k) or 0) for k in _COUNTS}}


def _num(x: Any) -> Any:
    """A number for JSON: floats as they are (shortest round-trip text), nan / inf as strings."""
    if x is None or isinstance(x, (bool, int)):
        return x
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _stats(st) -> dict[str, Any]:
    return {"numel": st.numel, "norm": _num(st.norm), "mean": _num(st.mean), "min": _num(st.min),
            "max": _num(st.max), "nonfinite": st.nonfinite}


def value_json(v) -> dict[str, Any] | None:
    """A recorded value for the inspector: its shape, dtype and every element when it was kept
    and has at most :data:`FULL_VALUES` of them, else its statistics."""
    if v is None:
        return None
    out: dict[str, Any] = {"shape": list(v.shape), "dtype": v.dtype}
    data = v.array  # numpy, read from the file's bytes (no torch in render)
    if data is not None and v.numel <= FULL_VALUES and data.dtype.kind != "c":
        out["values"] = [_num(x) for x in data.reshape(-1).tolist()]
    else:
        out["stats"] = _stats(v.stats)
        out["why"] = ("only statistics were recorded" if data is None else
                      f"{v.numel} elements: the page keeps up to {FULL_VALUES} of a tensor")
    return out


def _compact(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def _packed(v, item: dict[str, Any] | None) -> dict[str, Any]:
    """A value of the page's table: floating-point elements as the base64 of their
    little-endian bytes (``f4``: float32, ``f8``: float64) instead of a list of numbers, a
    third of the bytes for float32; the page reads them back into the same doubles (so the
    same text). float16, bfloat16 and float8 values are float32 values exactly."""
    assert item is not None
    data = v.array
    if "values" not in item or data is None or data.dtype.kind != "f":
        return item
    import base64

    import numpy as np

    wide = data.dtype.itemsize > 4
    raw = np.ascontiguousarray(data.reshape(-1), dtype="<f8" if wide else "<f4")
    out = {k: x for k, x in item.items() if k != "values"}
    out["f8" if wide else "f4"] = base64.b64encode(raw.tobytes()).decode("ascii")
    return out


class Values:
    """The page's table of distinct values: a step's node refers to its data and gradient by
    their number in :attr:`items` (each a :func:`value_json`, its floats packed: :func:`_packed`).

    Two values are the same value when they have the same dtype, shape and bytes (a blake2b
    digest of the bytes is the key), or, kept as statistics only, the same statistics: such
    values show the same numbers, so the page needs one copy."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}
        self.items: list[dict[str, Any]] = []
        self.sizes: list[int] = []  # bytes of each item in the page's JSON (and its comma)

    @staticmethod
    def key(v) -> tuple:
        data = v.array
        if data is None:
            return ("stats", v.dtype, tuple(v.shape), _compact(_stats(v.stats)))
        import numpy as np

        raw = np.ascontiguousarray(data)
        return (v.dtype, tuple(v.shape), raw.dtype.str,
                hashlib.blake2b(raw.tobytes(), digest_size=16).digest())

    def ref(self, v) -> int | None:
        """The number of value ``v`` in the table (added when it is new); None for no value."""
        if v is None:
            return None
        key = self.key(v)
        vid = self.ids.get(key)
        if vid is None:
            vid = self.ids[key] = len(self.items)
            item = _packed(v, value_json(v))
            self.items.append(item)
            self.sizes.append(len(_compact(item)) + 1)
        return vid


def _refs(d: Mapping[str, Any]) -> list[int]:
    """The value numbers step data ``d`` refers to, in the order of its nodes."""
    out = []
    for node in d["nodes"].values():
        for name in ("data", "grad"):
            if isinstance(node[name], int):
                out.append(node[name])
    return out


def _cell_json(cell) -> dict[str, Any]:
    return {"caption": cell.caption, "rows": [list(r) for r in cell.rows], "matrix": cell.matrix,
            "kind": cell.kind, "alert": cell.alert}


def _source_key(src) -> str | None:
    return None if src is None else f"{src.file}:{src.line}"


class Shapes:
    """The distinct graph shapes met so far, each laid out once: key -> id, id -> geometry.

    A shape is laid out when its geometry is first asked for, with each node's label as wide
    as the widest that node had in the steps met until then (so the numbers of every step
    held fit their boxes)."""

    def __init__(self, warn: Callable[[str], None] | None = None):
        self.ids: dict[Any, int] = {}
        self.models: dict[int, Any] = {}
        self.widest: dict[int, dict[int, tuple[int, Any, Any]]] = {}
        self._geometry: dict[int, Geometry] = {}
        self.warn = warn or (lambda message: None)

    def id_of(self, model) -> int:
        key = shape_key(model)
        if key not in self.ids:
            sid = len(self.ids)
            self.ids[key] = sid
            self.models[sid] = model
            self.widest[sid] = {}
        return self.ids[key]

    def widen(self, sid: int, node: int, width: int, data, grad) -> None:
        """Node ``node`` of shape ``sid`` says ``width`` characters with these values."""
        if sid in self._geometry:
            return  # laid out already: the page has it
        best = self.widest[sid].get(node)
        if best is None or width > best[0]:
            self.widest[sid][node] = (width, data, grad)

    def geometry(self, sid: int) -> Geometry:
        if sid not in self._geometry:
            import dataclasses

            model = self.models[sid]
            graph = model.graph.copy()
            for n, (_, data, grad) in self.widest[sid].items():
                graph.nodes[n]["data"], graph.nodes[n]["grad"] = data, grad
            self._geometry[sid] = geometry(dataclasses.replace(model, graph=graph), OPTIONS, warn=self.warn)
            self.widest[sid] = {}  # the values are not needed any more
        return self._geometry[sid]

    @property
    def laid_out(self) -> list[int]:
        return sorted(self.ids.values())


def _width(cells) -> int:
    """How many characters wide a node's value cells are (side by side, as drawn)."""
    total = 0
    for c in cells:
        if c.matrix:
            total += max((sum(len(x) + 2 for x in row) for row in c.rows), default=0)
        else:
            total = max(total, len(c.caption) + 1 + max((len(" ".join(r)) for r in c.rows), default=0))
    return total


def step_data(step, shapes: Shapes, values: Values | None = None) -> dict[str, Any]:
    """Everything the page shows of one step: the graph's shape id and each node's label cells
    and full values, the backward pass in execution order, and what each source line did.

    With ``values`` a node's ``data`` and ``grad`` are numbers in that table (the page's
    steps); without, the values themselves (a step `gradtrace serve` sends)."""
    value: Callable[[Any], Any] = value_json if values is None else values.ref
    out: dict[str, Any] = {"index": step.index, "loss": _num(step.loss), "shape": None,
                           "nodes": {}, "order": [], "lines": {}, "note": ""}
    lines: dict[str, list[str]] = {}

    def note(src, text: str) -> None:
        key = _source_key(src)
        if key is not None:
            items = lines.setdefault(key, [])
            if text not in items:
                items.append(text)

    for op in step.ops:
        if op.parent is None:
            note(op.source, op.name)
    if step.backward is not None:
        note(step.backward.source, f"backward ({len(step.backward.nodes)} grad_fn nodes)")
    how = {"fresh": "set (it was None)", "zeros": "added onto zeros",
           "added": "added on top of the old gradient (!)"}
    for kind, label in (("zero", "zeroed"), ("accumulate", ".grad"), ("update", "updated"),
                        ("grad_write", ".grad changed")):
        by_line: dict[str, list] = {}
        for e in step.events:
            key = _source_key(e.source)
            if e.kind == kind and key is not None:
                by_line.setdefault(key, []).append(e)
        for key, group in by_line.items():
            if kind == "accumulate":
                for acc in dict.fromkeys(e.accumulation or "fresh" for e in group):
                    names = ", ".join(dict.fromkeys(step.name(e.tensor) for e in group
                                                    if (e.accumulation or "fresh") == acc))
                    lines.setdefault(key, []).append(f"{names}: .grad {how.get(acc, acc)}")
            else:
                names = ", ".join(dict.fromkeys(step.name(e.tensor) for e in group))
                lines.setdefault(key, []).append(f"{names} {label}")
    out["lines"] = lines
    model = None
    try:
        view = "both" if step.backward is not None else "forward"
        model = build_graph(step, view, budget=OPTIONS.budget)
    except TraceFileError:
        raise
    except GradtraceError as e:
        out["note"] = f"no graph for this step ({e})"
    if model is None or len(model) == 0:
        if model is not None:
            out["note"] = "no graph for this step (no recorded op built one)"
        return out
    out["shape"] = shapes.id_of(model)
    laid_out = shapes.models[out["shape"]].graph.nodes   # the titles the shape's picture has
    nodes = out["nodes"]
    by_op: dict[int, int] = {}
    by_node: dict[int, int] = {}
    loss_node = None
    for n, a in model.graph.nodes(data=True):
        shown = node_label(a, OPTIONS, model.view)
        shapes.widen(out["shape"], n, _width(shown.cells), a["data"], a["grad"])
        ref = a["ref"]
        grad_fn = None
        if ref[0] == "op":
            by_op[ref[1]] = n
            try:
                grad_fn = step.op(ref[1]).grad_fn
            except GradtraceError:
                grad_fn = None
        elif ref[0] == "node":
            by_node[ref[1]] = n
        elif ref[0] == "loss":
            loss_node = n
        src = a["source"]
        nodes[str(n)] = {
            "cells": [_cell_json(c) for c in shown.cells],
            "data": value(a["data"]), "grad": value(a["grad"]),
            "grad_fn": grad_fn, "source": _source_key(src),
            "code": src.code.strip() if src is not None and src.code else "",
            "kind_name": LEGEND.get(a["kind"], a["kind"]), "note": a["note"],
            "options": a.get("options") or "",
        }
        if n in laid_out and laid_out[n]["title"] != a["title"]:  # an input titled by its id
            nodes[str(n)]["title"] = a["title"]
    if step.backward is not None:
        bw = step.backward
        for pos, g in enumerate(bw.execution_order):
            where = by_node.get(g.nid)
            if where is None and g.op is not None:
                where = by_op.get(g.op)
            if where is None and g.nid == 0:
                where = loss_node
            gin = g.grad_outputs[0] if g.grad_outputs else None
            passed = sum(1 for x in g.next if x is not None)
            if g.variable is not None:
                what = f"adds the gradient into {step.name(g.variable)}.grad"
            elif passed:
                what = f"passes gradients on to {passed} node{'s' if passed != 1 else ''}"
            else:
                what = "passes no gradient on"
            head = f"{g.name}" + (f" (backward of {model.graph.nodes[where]['title']})"
                                   if where is not None and g.variable is None else "")
            grad_in = "" if gin is None else f"; gradient in {fmt_shape(gin.shape)}, norm {fmt_number(gin.stats.norm)}"
            out["order"].append({"node": where, "name": g.name, "text": f"{head}: {what}{grad_in}"})
    return out


def plain_verdict(report) -> dict[str, Any]:
    """A verdict in plain words: a headline, its mood (ok / warn / bad) and one line each for
    the findings and failed checks, each with the step, parameter, op and line it points at."""
    items: list[dict[str, Any]] = []
    if report is None:
        return {"mood": "na", "headline": "Checks were not run for this page.", "items": [],
                "detail": ""}
    failed = list(report.failed)
    seen_fail: set[tuple] = set()
    for c in failed:
        key = (c.kind, c.param)
        if key in seen_fail:
            continue
        seen_fail.add(key)
        n = sum(1 for d in failed if (d.kind, d.param) == key)
        items.append({"kind": "failed check", "mood": "bad", "step": c.step, "param": c.param,
                      "op": None, "source": None,
                      "title": f"The gradient of {c.param or 'a parameter'} is wrong"
                               + (f" ({n} steps)" if n > 1 else ""),
                      "message": f"{c.kind} check, step {c.step}: {c.detail}"})
    serious = {"forgot_zero_grad", "non_finite", "lr_unstable"}
    for f in report.findings:
        items.append({"kind": f.kind, "mood": "bad" if f.kind in serious else "warn",
                      "step": f.step, "param": f.param, "op": f.op, "source": f.source,
                      "title": FINDING_TITLES.get(f.kind, f.kind.replace("_", " ")),
                      "message": f.message})
    checked = [c for c in report.checks if c.status != "not_applicable"]
    if failed:
        first = failed[0]
        headline = (f"The gradients are wrong: {first.param or 'a parameter'} at step {first.step} "
                    "does not match the loss it came from.")
        mood = "bad"
    elif not checked:
        headline = "No gradient check applies to this run; the training itself is described below."
        mood = "warn" if report.findings else "na"
    else:
        headline = f"The gradients are right: {len(checked)} checks agree with what autograd computed."
        mood = "ok"
    if report.findings:
        bad = [i for i in items if i["mood"] == "bad" and i["kind"] != "failed check"]
        n = len(report.findings)
        headline += (f" But training went wrong: {bad[0]['title'].lower()}." if bad else
                     f" {n} thing{'s' if n != 1 else ''} worth a look.")
        if bad:
            mood = "bad"
        elif mood == "ok":
            mood = "warn"
    return {"mood": mood, "headline": headline, "items": items, "detail": report.verdict()}


FINDING_TITLES = {
    "forgot_zero_grad": "Gradients pile up: .grad is never zeroed",
    "non_finite": "The numbers overflowed (nan / inf)",
    "lr_unstable": "The learning rate is too large: the loss diverges",
    "ill_conditioned": "The features are on different scales",
    "no_grad_received": "A parameter gets no gradient",
    "ranks_diverged": "The ranks' replicas drift apart",
    "no_grad_on_rank": "A parameter gets no gradient on some rank",
    "ranks_step_count": "The ranks ran different numbers of steps",
    "rank_missing": "A rank's trace is missing or unfinished",
}


def script_lines(trace, max_bytes: int = 2 << 20) -> dict[str, Any]:
    """The source lines to show, by file: the recorded lines (their text is in the trace), and
    the whole file when it is still on disk and still says exactly what was recorded (so a
    trace from elsewhere never makes the page show a file of this machine's it did not name
    with its content)."""
    by_file: dict[str, dict[int, str]] = {}
    for src in trace.sources.values():
        by_file.setdefault(src.file, {})[src.line] = src.code
    files = []
    for path in sorted(by_file, key=lambda p: (p != trace.info.script and not str(p).endswith(
            str(trace.info.script or "\0")), p)):
        recorded = by_file[path]
        full = _matching_file(path, recorded, max_bytes)
        if full is not None:
            shown = {i + 1: text for i, text in enumerate(full)}
        else:
            shown = {n: code for n, code in recorded.items()}
        files.append({"file": path, "name": os.path.basename(path.replace("\\", "/")),
                      "complete": full is not None,
                      "lines": [[n, shown[n]] for n in sorted(shown)]})
    return {"files": files}


def _matching_file(path: str, recorded: dict[int, str], max_bytes: int) -> list[str] | None:
    if not path.endswith(".py"):
        return None
    try:
        if os.path.getsize(path) > max_bytes:
            return None
        with open(path, encoding="utf-8") as f:
            text = f.read().splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    for n, code in recorded.items():
        if code and (n > len(text) or text[n - 1].strip() != code.strip()):
            return None
    return text


def _pick(candidates: list[int], must: list[int], sizes: Callable[[int], int], budget: int,
          refs: Callable[[int], list[int]] | None = None,
          ref_size: Callable[[int], int] | None = None) -> list[int]:
    """The steps to hold: those in ``must`` first, then an even sample of ``candidates`` that
    fits the byte ``budget`` (its length estimated from the steps measured so far).

    ``sizes(i)``: the bytes of step ``i``'s own data. With ``refs`` (the shared values step
    ``i`` refers to) and ``ref_size`` (a shared value's bytes), a shared value is counted
    once, by the first step held that refers to it."""
    chosen: list[int] = []
    counted: set[int] = set()
    used = 0

    def cost(i: int, seen: set[int]) -> tuple[int, set[int]]:
        new = set() if refs is None else set(refs(i)) - seen
        return sizes(i) + sum(ref_size(r) for r in new) if ref_size else sizes(i), new

    for i in must:
        if i in candidates and i not in chosen:
            size, new = cost(i, counted)
            if used + size <= budget or not chosen:
                chosen.append(i)
                counted |= new
                used += size
    rest = [i for i in candidates if i not in chosen]
    if not rest:
        return sorted(chosen)
    # spaced steps measured in turn (a value one of them shares with an earlier one counted
    # once, as the page will) say what a step of the sample costs
    probe, seen, spent = subsample(len(rest), 8), set(counted), 0
    for j in probe:
        size, new = cost(rest[j], seen)
        seen |= new
        spent += size
    # 5% short of the estimate: a first sample that fits (within 15% of the budget) is kept,
    # so most pages read and lay out only the steps they hold
    room = int(0.95 * max(0, budget - used) / max(1, spent / len(probe)))
    # the first sample's length comes from the probes; a sample that does not fit is made
    # smaller, one that leaves room larger (the steps measured say what a step costs), so the
    # held steps span the run and fill the budget; the largest sample that fitted is kept
    best: list[int] | None = None
    picked: list[int] = []
    for _ in range(3):
        picked, seen, total = [], set(counted), used
        sample = subsample(len(rest), int(room)) if room else []
        for j in sample:
            size, new = cost(rest[j], seen)
            if total + size > budget:
                break
            picked.append(rest[j])
            seen |= new
            total += size
        fits = len(picked) == len(sample)
        if fits and (best is None or len(picked) > len(best)):
            best = picked
        want = int(0.97 * (budget - used) / max(1.0, (total - used) / max(1, len(picked))))
        if fits:
            if room >= len(rest) or want <= room or (total - used) >= 0.85 * (budget - used):
                break
            room = min(len(rest), want)
        else:
            room = min(room - 1, want)
            if room <= 0 or (best is not None and room <= len(best)):
                break
    return sorted(chosen + (best if best is not None else picked))


def _numbered(held: list[dict], values: Values) -> tuple[dict[str, dict], list[dict]]:
    """The held steps (in step order) and the table of the values they refer to, numbered
    again in the order the steps first refer to them: the values measured for steps not held
    are left out, and the same trace always gives the same numbers."""
    new: dict[int, int] = {}
    table: list[dict] = []
    steps: dict[str, dict] = {}
    for d in held:
        nodes = {}
        for k, node in d["nodes"].items():
            node = dict(node)
            for name in ("data", "grad"):
                old = node[name]
                if isinstance(old, int):
                    if old not in new:
                        new[old] = len(table)
                        table.append(values.items[old])
                    node[name] = new[old]
            nodes[k] = node
        steps[str(d["index"])] = dict(d, nodes=nodes)
    return steps, table


def page_data(trace, report=None, *, budget: int = DEFAULT_BUDGET, mode: str = "file",
              warn: Callable[[str], None] | None = None, shapes: Shapes | None = None) -> dict[str, Any]:
    """The page's data. ``mode`` is ``file`` (a self-contained page) or ``serve`` (steps
    beyond those held are fetched from `gradtrace serve`)."""
    warn = warn or (lambda message: None)
    info = trace.info
    rows = scalars(trace)
    shapes = shapes if shapes is not None else Shapes(warn)
    recorded = [r["index"] for r in rows if r["recorded"]]
    must: list[int] = []
    verdict = plain_verdict(report)
    for item in verdict["items"]:
        if item["step"] is not None:
            must.append(item["step"])
    if recorded:
        must = [recorded[0]] + must + [recorded[-1]]
    cache: dict[int, tuple[dict, int, list[int]]] = {}
    values = Values()

    def build(i: int) -> tuple[dict, int, list[int]]:
        if i not in cache:
            d = step_data(trace.step(i), shapes, values)
            cache[i] = (d, len(_compact(d)), _refs(d))
        return cache[i]

    held = _pick(recorded, must, lambda i: build(i)[1], budget, refs=lambda i: build(i)[2],
                 ref_size=lambda r: values.sizes[r])
    steps, table = _numbered([build(i)[0] for i in held], values)
    n_rec = len(recorded)
    if mode == "serve":
        why = (f"Served by `gradtrace serve`: every one of the {n_rec} recorded steps is fetched "
               "when you go to it.")
    elif len(held) == n_rec:
        why = f"This page holds every recorded step ({n_rec})."
    else:
        why = (f"This page holds the full values of {len(held)} of {n_rec} recorded steps (the "
               f"steps findings point at, then evenly spaced ones, within "
               f"{budget / (1 << 20):.0f} MB); every step's loss and counts are here. "
               f"`gradtrace serve {os.path.basename(trace.path)}` shows any step.")
    return {
        "version": __version__, "mode": mode,
        "run": {"script": info.script, "status": info.status, "exit_code": info.exit_code,
                "error": info.error, "steps_seen": info.steps_seen, "torch": info.torch_version,
                "created": info.created, "trace": os.path.basename(trace.path)},
        "verdict": verdict, "scalars": rows, "held": held, "held_note": why, "steps": steps,
        "values": table,
        "shapes": {str(k): shapes.geometry(k).to_json() for k in shapes.laid_out},
        "source": script_lines(trace),
        "legend": {k: LEGEND[k] for k in LEGEND},
    }
