"""What one frame of the back-propagation explainer shows (:class:`Frame`, :class:`ParamCell`),
and the frames of what the script does to its tensors itself: updates, zeroings, ``.grad``
writes, a step that does not clear ``.grad``, and the end of the step. Pure: no drawing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..formatting import slide_number as fmt_num
from ..formatting import value as fmt_value

__all__ = ["ParamCell", "Frame"]


@dataclass
class ParamCell:
    """A parameter's card in the side panel: its value and what its ``.grad`` holds."""

    value: Any = None          # Value
    grad: Any = None           # Value, or None while .grad is None
    mark: str = ""             # in this frame: fresh | zeros | added | update | zero | none | write
    note: str = ""             # a few words beside the mark
    before: Any = None         # the value before an update shown in this frame

    def copy(self) -> "ParamCell":
        return ParamCell(self.value, self.grad)


@dataclass
class Frame:
    """Everything one frame shows. ``phase``: intro, forward, zero, backward, accumulate,
    update, grad_write, no_zero or done. Keys are tids; edges are (input tid, output tid)."""

    phase: str
    caption: str
    code: str = ""
    computed: set = field(default_factory=set)       # tensors whose value is known
    current: set = field(default_factory=set)        # tensors lit in this frame
    grad_edges: dict = field(default_factory=dict)   # edge -> Value: the gradient sent back along it
    current_edges: set = field(default_factory=set)  # edges lit in this frame
    grads: dict = field(default_factory=dict)        # tid -> Value: ∂loss/∂tensor, once known
    cells: dict = field(default_factory=dict)        # param tid -> ParamCell
    alert: bool = False                              # the forgot-to-zero case, a failed check
    failed: dict = field(default_factory=dict)       # tid -> words: a failed check marks its box

    def snapshot(self, phase: str, caption: str, code: str = "", alert: bool = False) -> "Frame":
        return Frame(phase, caption, code, set(self.computed), set(), dict(self.grad_edges),
                     set(), dict(self.grads), {t: c.copy() for t, c in self.cells.items()}, alert)


def _code(*sources) -> str:
    """``file.py:12   code`` for up to two distinct source lines."""
    from .text import fit_source

    parts = []
    for src in dict.fromkeys(s for s in sources if s is not None):
        code = fit_source((src.code or "").strip())  # a comment no font can draw is dropped
        parts.append(f"{src.short}   {code}" if code else src.short)
        if len(parts) == 2:
            break
    return "    ·    ".join(parts)


def _acc_mark(e) -> str:
    """fresh (.grad was None), zeros (added onto a cleared .grad) or added (the bug case)."""
    return e.accumulation


def _acc_note(e) -> str:
    m = _acc_mark(e)
    if m == "fresh":
        return "fresh: .grad was None"
    if m == "zeros":
        return "added onto zeros"
    return f"ADDED to old {fmt_value(e.before)}!"


def _paren(v) -> str:
    s = fmt_value(v)
    return f"({s})" if s.startswith(("−", "mean")) else s


def _next_loss(trace, step) -> float | None:
    """The loss of the step recorded right after ``step`` (what the update led to)."""
    rows = trace.step_rows()
    for i, row in enumerate(rows):
        if row["index"] == step.index:
            nxt = rows[i + 1]["loss"] if i + 1 < len(rows) else None
            return None if nxt is None or step.loss is None else float(nxt)
    return None


def _event_frame(st: Frame, step, group, next_loss: float | None = None) -> Frame:
    kind = group[0].kind
    parts = []
    for e in group:
        cell = st.cells.get(e.tensor)
        name = step.name(e.tensor)
        if kind == "update":
            # (no value before: the first write of a new parameter, its initialisation)
            before = "new" if e.before is None else fmt_value(e.before)
            parts.append(f"{name} {before} → {fmt_value(e.after)}" + _lr_words(e, cell))
            if cell is not None:
                cell.value = e.after
        else:
            after = "None" if e.after is None else fmt_value(e.after)
            parts.append(f"{name}.grad {fmt_value(e.before)} → {after}")
            if cell is not None:
                cell.grad = e.after
    idioms = ", ".join(dict.fromkeys(e.idiom for e in group))
    # Updates before the step's first gradient (or of a parameter's first values) set the
    # parameters up: nn.Linear's kaiming_uniform_, d2l's weight.data.normal_(0, 0.01).
    init = False
    if kind == "update":
        first_grad = min((a.seq for a in step.accumulations), default=None)
        init = all(e.before is None or (first_grad is not None and e.seq < first_grad)
                   for e in group)
    stale = not init and kind == "update" and any(
        _acc_mark(a) == "added" for a in step.accumulations if a.tensor in {e.tensor for e in group})
    uphill = not init and kind == "update" and next_loss is not None and step.loss is not None \
        and not next_loss <= step.loss
    if init:
        caption = (f"Before any gradient, the script sets the parameters' values, using {idioms}: "
                   + "; ".join(parts) + ".")
    elif stale:
        caption = (f"The update, using {idioms}, moves each parameter against its .grad — which "
                   "still holds the old gradients too, so the step is not the one this step's "
                   "gradient asks for: " + "; ".join(parts) + ".")
    elif uphill:
        # A step too big for the curvature (exploding_lr): do not call it downhill.
        caption = (f"The update, using {idioms}, moves each parameter against its gradient, but "
                   f"too far: the loss goes UP, from {fmt_num(step.loss)} to "
                   f"{fmt_num(next_loss)} at the next step: " + "; ".join(parts) + ".")
    elif kind == "update":
        caption = (f"The update, using {idioms}, moves each parameter a small step against its "
                   "gradient, downhill on the loss: " + "; ".join(parts) + ".")
    elif kind == "zero":
        to_none = all(e.after is None for e in group)
        caption = (f"The script clears .grad{' (sets it to None)' if to_none else ' to zeros'} "
                   f"using {idioms}: " + "; ".join(parts)
                   + ". The next backward() starts from a clean slate.")
    else:
        caption = f"The script changes .grad without clearing it ({idioms}): " + "; ".join(parts) + "."
    f = st.snapshot(kind, caption, _code(*(e.source for e in group)), alert=stale or uphill)
    for e in group:
        if e.tensor in f.cells:
            f.cells[e.tensor].mark = {"update": "update", "zero": "zero"}.get(kind, "write")
            if kind == "update":
                f.cells[e.tensor].before = e.before
            f.current.add(e.tensor)
    return f


def _lr_words(e, cell) -> str:
    """`` (a change of −0.01 × .grad)`` when the change is one number times the gradient."""
    g = cell.grad if cell is not None else None
    if g is None or e.before is None or e.after is None:
        return ""
    if g.array is None or e.before.array is None or e.after.array is None:
        return ""
    from ..analysis.diagnostics import gradient_multiple

    r = gradient_multiple(e.before.array, e.after.array, g.array)
    if r is None:
        return ""
    return f", a change of {fmt_num(r)} × .grad"


def _no_zero_frame(st: Frame, trace, step) -> Frame:
    rows = trace.step_rows()
    later = [r["index"] for r in rows if r["index"] > step.index and r["zeroings"]]
    earlier = [r["index"] for r in rows if r["index"] < step.index and r["zeroings"]]
    if later:
        try:
            z = trace.step(later[0]).zeroings
        except KeyError:
            z = ()
        where = f" ({_code(z[0].source)})" if z and z[0].source else ""
        caption = (f"This step does not clear .grad: the script does that in step {later[0]}, before "
                   f"that step's backward(){where}. Until then .grad keeps this step's gradient.")
        f = st.snapshot("no_zero", caption)
        for c in f.cells.values():
            c.mark, c.note = "none", "cleared next step"
        return f
    if earlier:
        caption = (f"This step does not clear .grad (the last zeroing was in step {earlier[-1]}): "
                   "the next backward() will add to what .grad holds now.")
        f = st.snapshot("no_zero", caption, alert=True)
        for c in f.cells.values():
            c.mark, c.note = "none", "not cleared"
        return f
    caption = ("The script never zeroes .grad — no zero_(), zero_grad() or `.grad = None` anywhere "
               "in the run — so the next backward() will ADD its gradient to these, and every later "
               "update uses the sum of all the gradients so far.")
    f = st.snapshot("no_zero", caption, alert=True)
    for c in f.cells.values():
        c.mark, c.note = "added", "never zeroed!"
    return f


def _done_frame(st: Frame, step) -> Frame:
    moves = []
    for tid, cell in st.cells.items():
        before = step.value(tid)
        if before is not None and cell.value is not None and cell.value is not before:
            moves.append(f"{step.name(tid)} {fmt_value(before)} → {fmt_value(cell.value)}")
    loss = step.loss
    caption = (f"Step {step.index} done. Loss {fmt_num(loss) if loss is not None else '?'}; "
               + ("; ".join(moves) if moves else "no parameter changed in this step")
               + ". The next step runs the same graph again with the new values.")
    return st.snapshot("done", caption)
