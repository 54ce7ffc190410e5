"""The frames of the backward pass: each grad_fn node in autograd's execution order, the
gradient it sends back along each edge, and what ``.grad`` accumulation does with it
(fresh, added onto zeros, or added to an old gradient). Pure: no drawing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..formatting import value as fmt_value
from .backprop_frames import Frame, _acc_mark, _acc_note, _code, _paren
from .backprop_scene import Scene

if TYPE_CHECKING:  # the model module is only imported where values are added
    from ..tracefile.model import GradNode

__all__: list[str] = []


# What each backward node does with the gradient that arrives, in a lecture's words.
_LOCAL = {
    "MeanBackward": "spreads it evenly: each of the {n} elements gets 1/{n} of it",
    "SumBackward": "copies it to every element",
    "AddBackward": "passes it on unchanged to both inputs (summed where one was broadcast)",
    "SubBackward": "passes it to the first input, and its negative to the second",
    "RsubBackward": "passes its negative on",
    "MulBackward": "multiplies it by the other factor",
    "DivBackward": "divides it by the divisor",
    "PowBackward": "multiplies it by the local slope p·x^(p−1)",
    "MmBackward": "multiplies it by the other matrix, transposed",
    "AddmmBackward": "gives the bias the gradient summed over the batch and the weight its product with the input",
    "MseLossBackward": "multiplies it by 2(prediction − target)/n",
    "TBackward": "transposes it back",
    "PermuteBackward": "transposes it back",
    "TransposeBackward": "transposes it back",
    "ViewBackward": "reshapes it back",
    "ReshapeAliasBackward": "reshapes it back",
    "UnsafeViewBackward": "reshapes it back",
    "NegBackward": "negates it",
    "ExpandBackward": "sums it over the broadcast dimensions",
    "ReluBackward": "lets it through where the input was positive, zero elsewhere",
    "SigmoidBackward": "multiplies it by σ(1−σ)",
    "TanhBackward": "multiplies it by 1 − tanh²",
}


def _local_words(node) -> str:
    words = _LOCAL.get(node.name.rstrip("0123456789"))
    if words is None:
        return "multiplies it by its local derivative (the chain rule)"
    if "{n}" in words:
        g = next((g for g in node.grad_inputs if g is not None), None)
        words = words.format(n=g.numel if g is not None else "n")
    return words


def _target(bw, nid: int | None):
    """Follow a gradient edge to where it lands: (("leaf", tid) | ("op", index) | None,
    the op-less nodes on the way, such as TBackward0 inside linear)."""
    hidden: list[GradNode] = []
    seen = set()
    while nid is not None and nid not in seen:
        seen.add(nid)
        n = bw.nodes[nid]
        if n.variable is not None:
            return ("leaf", n.variable), hidden
        if n.op is not None:
            return ("op", n.op), hidden
        hidden.append(n)
        nxt = [x for x in n.next if x is not None]
        nid = nxt[0] if len(nxt) == 1 else None
    return None, hidden


def _sum_values(a, b):
    """Two gradients sent along the same edge (``diff * diff``), added."""
    from ..tracefile.model import Value

    if a is None:
        return b
    if a.array is None or b is None or b.array is None or a.array.shape != b.array.shape:
        return a
    return Value(-1, a.shape, a.dtype, array=a.array + b.array)


def _backward_frames(st: Frame, step, scene: Scene, acc_by_tid, per) -> list[Frame]:
    bw = step.backward
    ops = {o.index: o for o in step.ops}
    out_of = {i: o.outputs[0] for i, o in ops.items() if o.outputs}

    def land(nid):
        tgt, hidden = _target(bw, nid)
        if tgt is None:
            return None, hidden
        return (tgt[1] if tgt[0] == "leaf" else out_of.get(tgt[1])), hidden

    # op-less nodes sit on the edge of the op whose node feeds them
    hidden_edge: dict[int, tuple[int, int]] = {}
    for n in bw.nodes:
        if n.op is None or n.op not in out_of:
            continue
        for nxt in n.next:
            tid, hidden = land(nxt)
            for h in hidden:
                if tid is not None:
                    hidden_edge[h.nid] = (tid, out_of[n.op])

    frames = []
    one = bw.nodes[0].grad_outputs[0] if bw.nodes and bw.nodes[0].grad_outputs else None
    if one is not None:
        st.grads[scene.loss] = one
    lv = step.value(scene.loss)
    f = st.snapshot(
        "backward",
        f"backward() starts at the loss {step.name(scene.loss)}"
        + (f" = {fmt_value(lv)}" if lv is not None else "")
        + ": its gradient with respect to itself is 1. Each grad_fn takes the gradient that "
          "arrives, multiplies it by its local derivative (the chain rule) and sends the "
          "result back along its inputs' edges.",
        _code(bw.source))
    f.current.add(scene.loss)
    frames.append(f)

    nodes = bw.execution_order
    total = len(nodes)
    k = 0
    while k < total:
        chunk = nodes[k:k + per]
        captions = []
        cur, cur_edges = set(), set()
        alert = False
        for j, n in enumerate(chunk):
            no = f"{k + j + 1}/{total}"
            if n.variable is not None:
                tid = n.variable
                g = n.grad_outputs[0] if n.grad_outputs else None
                if g is not None:
                    st.grads[tid] = g
                cur.add(tid)
                e = acc_by_tid.get(tid)
                words, bad = _accumulate_words(step, tid, e, g)
                alert |= bad
                if tid in st.cells and e is not None:
                    st.cells[tid].grad = e.after
                captions.append(f"{no}: AccumulateGrad, the end of the line for the leaf "
                                f"{step.name(tid)}: {words}")
                continue
            if n.op is None:
                edge = hidden_edge.get(n.nid)
                g = n.grad_inputs[0] if n.grad_inputs else None
                if edge is not None and g is not None and edge in scene.edges:
                    st.grad_edges[edge] = g
                    cur_edges.add(edge)
                captions.append(f"{no}: {n.name}, a step inside an op, {_local_words(n)}"
                                + (f": {fmt_value(g)}" if g is not None else "") + ".")
                continue
            out = out_of.get(n.op)
            if out is not None:
                cur.add(out)
                if n.grad_outputs and n.grad_outputs[0] is not None:
                    st.grads[out] = n.grad_outputs[0]
            sent: dict[tuple[int, int], Any] = {}
            for i, nxt in enumerate(n.next):
                if nxt is None or i >= len(n.grad_inputs) or n.grad_inputs[i] is None or out is None:
                    continue
                tid, _ = land(nxt)
                edge = (tid, out)
                if tid is not None and edge in scene.edges:
                    sent[edge] = _sum_values(sent.get(edge), n.grad_inputs[i])
            for edge, g in sent.items():
                st.grad_edges[edge] = g
                cur_edges.add(edge)
            g_in = n.grad_outputs[0] if n.grad_outputs else None
            name = step.name(out) if out is not None else "its output"
            dests = "; ".join(f"∂loss/∂{step.name(a)} = {fmt_value(g)}" for (a, _), g in sent.items())
            op = ops.get(n.op)
            skipped = [t for t in (op.inputs if op is not None else ())
                       if (t, out) in scene.edges and (t, out) not in sent
                       and not (step.tensors.get(t) and step.tensors[t].requires_grad)]
            if skipped:
                names = ", ".join(dict.fromkeys(step.name(t) for t in skipped))
                dests += (("; " if dests else "") + f"nothing for {names}, which does not need a "
                          "gradient")
            ins = op.inputs if op is not None else ()
            twice = [t for t in dict.fromkeys(ins) if ins.count(t) > 1 and (t, out) in sent]
            if twice:
                dests += (f" ({', '.join(step.name(t) for t in twice)} is both inputs, so the two "
                          "gradients it gets are added)")
            local = (_local_words(n) if op is None or not op.is_function
                     else "runs the backward() the Function's author wrote")
            captions.append(f"{no}: {n.name} (the grad_fn of {name}) receives ∂loss/∂{name}"
                            + (f" = {fmt_value(g_in)}" if g_in is not None else "")
                            + f" and {local}" + (f": {dests}" if dests else "") + ".")
        k += len(chunk)
        f = st.snapshot("backward", "Backward " + "  ".join(captions), _code(bw.source), alert)
        f.current = cur
        f.current_edges = cur_edges
        for n in chunk:
            e = acc_by_tid.get(n.variable) if n.variable is not None else None
            if e is not None and n.variable in f.cells:
                f.cells[n.variable].mark = _acc_mark(e)
                f.cells[n.variable].note = _acc_note(e)
        frames.append(f)
    return frames


def _accumulate_words(step, tid, e, g) -> tuple[str, bool]:
    name = step.name(tid)
    if e is None:
        return (f"the gradient {fmt_value(g)} reaches {name}.", False)
    inc = e.incoming or g
    m = _acc_mark(e)
    if m == "fresh":
        return (f"{name}.grad was None, so it becomes the incoming gradient {fmt_value(inc)} (fresh).", False)
    if m == "zeros":
        return (f"{name}.grad held zeros (it was cleared), so it becomes 0 + {_paren(inc)} = "
                f"{fmt_value(e.after)} (added onto zeros).", False)
    return (f"{name}.grad still held {fmt_value(e.before)} from before, and backward() ADDS: "
            f"{fmt_value(e.before)} + {_paren(inc)} = {fmt_value(e.after)}. "
            "The old gradient was never cleared.", True)


def _accumulate_summary(st: Frame, step, scene, acc_by_tid) -> Frame:
    parts = []
    alert = False
    for tid in scene.params:
        e = acc_by_tid.get(tid)
        if e is None:
            continue
        m = _acc_mark(e)
        name = step.name(tid)
        if m == "fresh":
            parts.append(f"{name}.grad = {fmt_value(e.after)} (fresh)")
        elif m == "zeros":
            parts.append(f"{name}.grad = 0 + {_paren(e.incoming)} = {fmt_value(e.after)} (added onto zeros)")
        else:
            alert = True
            parts.append(f"{name}.grad = {fmt_value(e.before)} + {_paren(e.incoming)} = "
                         f"{fmt_value(e.after)} (ADDED to the old gradient)")
    if not parts:
        caption = "backward() is done, but no leaf received a gradient."
    else:
        caption = "backward() is done. The leaves' .grad now hold: " + "; ".join(parts) + "."
        if alert:
            caption += (" That is not this step's gradient: it still contains the previous "
                        "step's, because nothing cleared .grad in between.")
        elif all(_acc_mark(acc_by_tid[t]) == "fresh" for t in scene.params if t in acc_by_tid):
            caption += " .grad was None before, so each is exactly this step's gradient."
        else:
            caption += " .grad had been cleared, so each is exactly this step's gradient."
    f = st.snapshot("accumulate", caption, "", alert)
    for tid in scene.params:
        e = acc_by_tid.get(tid)
        if e is not None and tid in f.cells:
            f.cells[tid].mark = _acc_mark(e)
            f.cells[tid].note = _acc_note(e)
            f.current.add(tid)
    return f
