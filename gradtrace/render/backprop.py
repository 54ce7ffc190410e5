"""The back-propagation explainer: one recorded step, frame by frame, on a fixed graph picture.

Two halves, kept apart so the walk can be tested without drawing:

- :func:`backprop_plan` walks the step (forward ops, the backward pass in autograd's
  execution order, ``.grad`` accumulation, updates, zeroings, in the order the script did
  them) and returns a :class:`Plan`: a fixed :class:`Scene` (nodes, edges, positions) and
  one :class:`Frame` per moment, each a complete description of what is lit, which values
  and gradients are shown, and a caption in plain words.
- :class:`BackpropRenderer` draws a frame of a plan on a matplotlib figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NothingToDrawError, UsageError

if TYPE_CHECKING:  # the model module is only imported where values are added
    from ..tracefile.model import GradNode

__all__ = ["Scene", "Frame", "Plan", "ParamCell", "backprop_plan", "BackpropRenderer",
           "fmt_num", "fmt_value", "pick_step"]

Key = tuple  # ("t", tid) for a tensor, ("o", op index) for an op


# -- numbers in words ---------------------------------------------------------------------------

def fmt_num(x: float | None) -> str:
    """A number to 3-4 significant digits, with a real minus sign."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    a = abs(x)
    s = f"{x:.4g}" if 1e-3 <= a < 1e5 else f"{x:.3g}"
    return s.replace("-", "−")


def fmt_shape(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "scalar"


def fmt_value(v, *, max_items: int = 3) -> str:
    """A Value as a reader wants it: the number, a short list, or shape and mean."""
    if v is None:
        return "None"
    if v.data is not None and v.numel > max_items and v.numel and bool((v.data == 0).all()):
        return "zeros"
    if v.data is not None and v.numel <= max_items:
        flat = [float(x) for x in v.data.reshape(-1).tolist()]
        if len(flat) == 1:
            return fmt_num(flat[0])
        return "[" + ", ".join(fmt_num(x) for x in flat) + "]"
    s = v.stats
    if s.numel == 0:
        return f"{fmt_shape(v.shape)} (empty)"
    mean = shown_mean(s)
    if mean == 0 and s.min != s.max:  # the mean says nothing here; the range does
        return f"mean 0, {fmt_num(s.min)} … {fmt_num(s.max)}"
    return f"mean {fmt_num(mean)}"


def shown_mean(s) -> float:
    """The mean of a Stats, or 0 when it is float noise next to the spread (a softmax
    gradient sums to zero, so its mean comes out as 1e-11): the graph's rule too."""
    return 0.0 if abs(s.mean) < 1e-6 * max(abs(s.min), abs(s.max)) else s.mean


def _is_zero(v) -> bool:
    if v is None:
        return False
    if v.data is not None:
        return bool((v.data == 0).all())
    s = v.stats
    return s.numel > 0 and s.min == 0 and s.max == 0


# -- the scene: what is drawn and where ----------------------------------------------------------
#
# One box per tensor. A tensor an op produced is labelled with that op (``t9 = x × w``) and
# its ``grad_fn``, which is how PyTorch itself sees it: lighting the box lights the op in
# the forward pass and its grad_fn node in the backward pass. Edges run from an op's inputs
# to its output; the gradient of an input travels back along its edge.

_SYMBOL = {
    "add": "+", "add_": "+", "sub": "−", "rsub": "−", "mul": "×", "div": "÷", "true_divide": "÷",
    "matmul": "@", "mm": "@", "bmm": "@", "pow": "**",
}


@dataclass(frozen=True)
class SceneNode:
    """A tensor box. ``role``: param | input | activation | loss; ``op`` the index of the op
    that produced it (None for leaves); ``prep``: produced by an op no gradient flows through."""

    tid: int
    label: str
    role: str
    shape: tuple
    op: int | None = None
    expr: str = ""
    grad_fn: str | None = None
    prep: bool = False


@dataclass(frozen=True)
class Scene:
    """The fixed picture: tensor boxes, edges (input tid, output tid) and positions."""

    nodes: dict[int, SceneNode]
    edges: tuple[tuple[int, int], ...]
    pos: dict[int, tuple[float, float]]
    loss: int
    params: tuple[int, ...]

    def edges_into(self, tid: int) -> list[tuple[int, int]]:
        return [e for e in self.edges if e[1] == tid]


def _positions(nodes: dict[int, SceneNode], edges) -> dict[int, tuple[float, float]]:
    """Fixed positions, leaves on the left, the loss on the right.

    Columns by longest path, each leaf pulled next to its first consumer; rows by spreading
    each box's inputs around it, from the loss backwards. This is the one function that
    decides where boxes go, so the graph renderer's layout can replace it.
    """
    succ: dict[int, list[int]] = {k: [] for k in nodes}
    pred: dict[int, list[int]] = {k: [] for k in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    order = list(nodes)  # insertion order is topological: built from the forward ops
    col: dict[int, int] = {}
    for k in order:
        col[k] = max((col[p] + 1 for p in pred[k]), default=0)
    for k in reversed(order):
        if not pred[k] and succ[k]:
            col[k] = min(col[s] for s in succ[k]) - 1
    lo = min(col.values())
    col = {k: v - lo for k, v in col.items()}
    n_cols = max(col.values()) + 1
    want: dict[int, list[float]] = {}
    y: dict[int, float] = {}
    for c in range(n_cols - 1, -1, -1):
        here = [k for k in order if col[k] == c]
        for k in here:
            w = want.get(k)
            y[k] = sum(w) / len(w) if w else 0.0
        here.sort(key=lambda k: (y[k], order.index(k)))
        target = sum(y[k] for k in here) / len(here)
        for j in range(1, len(here)):
            y[here[j]] = max(y[here[j]], y[here[j - 1]] + 1.0)
        shift = target - sum(y[k] for k in here) / len(here)
        for k in here:
            y[k] += shift
            ins = list(dict.fromkeys(pred[k]))
            for j, p in enumerate(ins):
                want.setdefault(p, []).append(y[k] + (j - (len(ins) - 1) / 2) * 1.0)
    # first input on top: matplotlib's y grows upwards
    return {k: (float(col[k]), -y[k]) for k in nodes}


def _scene(step) -> Scene:
    bw = step.backward
    ops = {o.index: o for o in step.ops if o.parent is None}
    producer: dict[int, Any] = {}
    for o in ops.values():
        if o.seq < bw.seq:
            for t in o.outputs:
                producer[t] = o
    loss = bw.roots[0]
    grad_fn = {n.op: n.name for n in bw.nodes if n.op is not None}
    # Walk back from the loss: every op (graph or prep) whose output it depends on.
    needed: set[int] = set()
    stack, seen = [loss], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        o = producer.get(t)
        if o is not None:
            needed.add(o.index)
            stack.extend(o.inputs)
    nodes: dict[int, SceneNode] = {}
    edges: list[tuple[int, int]] = []

    def leaf(tid: int):
        if tid not in nodes:
            info = step.tensors.get(tid)
            v = step.value(tid)
            shape = info.shape if info is not None else (v.shape if v is not None else ())
            role = "param" if info is not None and info.requires_grad else "input"
            nodes[tid] = SceneNode(tid, step.name(tid), "loss" if tid == loss else role, tuple(shape))

    for o in sorted((ops[i] for i in needed), key=lambda o: o.seq):
        for t in o.inputs:
            leaf(t)
        for t in o.outputs:
            v = step.value(t)
            info = step.tensors.get(t)
            shape = info.shape if info is not None else (v.shape if v is not None else ())
            nodes[t] = SceneNode(t, step.name(t), "loss" if t == loss else "activation", tuple(shape),
                                 o.index, _expr(o, step), grad_fn.get(o.index), not o.is_graph)
            for a in dict.fromkeys(o.inputs):
                edges.append((a, t))
    leaf(loss)
    params = [t for t, n in nodes.items() if n.role == "param"]
    for e in step.events:
        info = step.tensors.get(e.tensor)
        if e.tensor not in params and info is not None and info.requires_grad:
            params.append(e.tensor)
    return Scene(nodes, tuple(edges), _positions(nodes, edges), loss, tuple(params))


# -- frames ----------------------------------------------------------------------------------------

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
    alert: bool = False                              # the forgot-to-zero case

    def snapshot(self, phase: str, caption: str, code: str = "", alert: bool = False) -> "Frame":
        return Frame(phase, caption, code, set(self.computed), set(), dict(self.grad_edges),
                     set(), dict(self.grads), {t: c.copy() for t, c in self.cells.items()}, alert)


@dataclass
class Plan:
    scene: Scene
    frames: list[Frame]
    step: int
    phases: list[str]        # the phases in the order this step went through them
    title: str
    note: str | None = None


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


_FWD_WORDS = {
    "add": "adds", "sub": "subtracts", "mul": "multiplies", "div": "divides",
    "pow": "raises to a power", "matmul": "matrix-multiplies", "mm": "matrix-multiplies",
    "mean": "averages", "sum": "sums", "linear": "applies the linear layer",
    "mse_loss": "computes the mean squared error", "t": "transposes", "T": "transposes",
    "mT": "transposes", "transpose": "transposes", "reshape": "reshapes",
    "view": "reshapes", "rsub": "subtracts from a number",
}


def _expr(op, step) -> str:
    """``x × w``, ``mean(t12)``: what an op computed, in the script's names."""
    names = [step.name(t) for t in op.inputs]
    tensor_args = [a for a in op.args if isinstance(a, dict) and "tensor" in a]
    scal = [fmt_num(a) for a in op.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    args = names + scal
    sym = _SYMBOL.get(op.name)
    if op.name == "linear" and len(names) >= 2:
        return f"{names[0]} @ {names[1]}ᵀ" + (f" + {names[2]}" if len(names) > 2 else "")
    if op.name == "mse_loss" and len(names) == 2:
        return f"{op.kwargs.get('reduction', 'mean')}(({names[0]} − {names[1]})²)"
    if op.name == "rsub" and len(args) == 2:
        return f"{args[1]} − {args[0]}"
    if op.name in ("t", "T", "mT", "transpose") and names:
        return f"{names[0]}ᵀ"
    if op.name in ("reshape", "view") and names:
        shape = next((a for a in op.args if isinstance(a, (list, tuple))), None)
        return f"{names[0]}.{op.name}({', '.join(map(str, shape))})" if shape else f"{names[0]}.{op.name}(…)"
    if sym and len(args) == 2 and len(tensor_args) >= 1:
        return f"{args[0]} {sym} {args[1]}"
    return f"{op.name}({', '.join(args)})"


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


_PHASE_LABEL = {"forward": "forward", "zero": "zero .grad", "backward": "backward",
                "accumulate": "accumulate .grad", "update": "update", "grad_write": "change .grad",
                "no_zero": "zero .grad?"}


def pick_step(trace, spec):
    """The step to explain: a run step number, ``"first"``, ``"last"`` (the last with a
    backward pass), or ``None``: the second step with a backward pass, the first in which
    ``.grad`` may already hold something, so that the accumulation frame shows whether the
    script clears it (the first step when there is only one)."""
    steps = trace.steps
    if len(steps) == 0:
        raise UsageError(f"{trace.path} has no recorded steps (did the script call backward()?)")
    if spec is None:
        with_bw = [i for i in range(min(len(steps), 4)) if steps[i].backward is not None]
        if not with_bw:
            raise UsageError(f"{trace.path}: its first steps have no backward pass; pick one with --step N")
        return steps[with_bw[1] if len(with_bw) > 1 else with_bw[0]]
    return trace.select(spec)


def backprop_plan(trace, step, budget: int = 80) -> Plan:
    """The frames that explain ``step`` of ``trace``, at most ``budget`` of them (forward ops
    and backward nodes share frames when there would be more)."""
    if step.backward is None:
        raise NothingToDrawError(f"step {step.index} has no backward pass to explain; pick a "
                                 "step that called backward() (--step N)")
    scene = _scene(step)
    bw = step.backward
    fwd_ops = [o for o in step.ops if o.parent is None and o.outputs
               and o.outputs[0] in scene.nodes and scene.nodes[o.outputs[0]].op == o.index]
    run_nodes = bw.execution_order
    groups = _group_events([e for e in step.events if e.kind != "accumulate"])
    fixed = 4 + len(groups) + 1
    flexible = len(fwd_ops) + len(run_nodes)
    per = 1
    note = None
    if fixed + flexible > budget:
        per = math.ceil(flexible / max(2, budget - fixed))
        note = (f"{len(fwd_ops)} forward ops and {len(run_nodes)} backward nodes are shown up to "
                f"{per} per frame to keep within the {budget}-frame budget")

    st = Frame("intro", "")
    st.computed.update(t for t, n in scene.nodes.items() if n.op is None)
    first_grad = _grad_before(step)
    for tid in scene.params:
        st.cells[tid] = ParamCell(value=step.value(tid) or _first_value(step, tid),
                                  grad=first_grad.get(tid))
    frames: list[Frame] = []
    phases: list[str] = []

    def phase(p: str):
        if not phases or phases[-1] != p:
            phases.append(p)

    idx = trace.steps.indices
    params = [scene.nodes[t].label for t in scene.params if t in scene.nodes]
    data = [n.label for n in scene.nodes.values() if n.role == "input"]
    intro = (f"Step {step.index} (of steps {idx[0]}–{idx[-1]}). The forward pass will build this "
             f"graph from the leaves — " + (f"data {', '.join(data)} and " if data else "")
             + f"parameters {', '.join(params) or '(none)'}, which require grad — to the loss "
             f"{step.name(scene.loss)}. Each box is a tensor; its grad_fn is the node backward() "
             "will run for it.")
    frames.append(st.snapshot("intro", intro))

    acc_by_tid = {e.tensor: e for e in step.accumulations}
    fwd_set = {o.index for o in fwd_ops}
    timeline = [x for x in step.timeline()
                if x.kind not in ("accumulate", "op") or (x.kind == "op" and x.index in fwd_set)]
    done_fwd = 0
    i = 0
    while i < len(timeline):
        item = timeline[i]
        if item.kind == "op":
            chunk = [item]
            i += 1
            while len(chunk) < per and i < len(timeline) and timeline[i].kind == "op":
                chunk.append(timeline[i])
                i += 1
            phase("forward")
            outs = [o.outputs[0] for o in chunk]
            st.computed.update(outs)
            done_fwd += len(chunk)
            f = st.snapshot("forward", _forward_caption(chunk, step, done_fwd, len(fwd_ops), scene),
                            _code(*(o.source for o in chunk)))
            f.current.update(outs)
            f.current_edges.update(e for t in outs for e in scene.edges_into(t))
            frames.append(f)
            continue
        if item.kind == "backward":
            phase("backward")
            frames.extend(_backward_frames(st, step, scene, acc_by_tid, per))
            phase("accumulate")
            frames.append(_accumulate_summary(st, step, scene, acc_by_tid))
            i += 1
            continue
        group = [item]
        i += 1
        while i < len(timeline) and timeline[i].kind == item.kind:
            group.append(timeline[i])
            i += 1
        phase(item.kind)
        frames.append(_event_frame(st, step, group, _next_loss(trace, step)))
    if not step.zeroings:
        phase("no_zero")
        frames.append(_no_zero_frame(st, trace, step))
    frames.append(_done_frame(st, step))
    title = f"{_script_name(trace)} · step {step.index}: back-propagation, one step"
    return Plan(scene, frames, step.index, phases, title, note)


def _script_name(trace) -> str:
    try:
        script = trace.info.script
    except Exception:  # noqa: BLE001 - a trace without run info still animates
        script = None
    if not script:
        return "trace"
    return str(script).replace("\\", "/").rsplit("/", 1)[-1]


def _first_value(step, tid):
    for e in step.events:
        if e.tensor == tid and e.kind == "update" and e.before is not None:
            return e.before
    return None


def _grad_before(step) -> dict[int, Any]:
    """What each leaf's .grad held when the step began, from the first event that touched it."""
    out: dict[int, Any] = {}
    for e in step.events:
        if e.kind != "update" and e.tensor not in out:
            out[e.tensor] = e.before   # None: .grad was None
    return out


def _forward_caption(chunk, step, upto, total, scene) -> str:
    if len(chunk) > 1:
        lo = upto - len(chunk) + 1
        return (f"Forward {lo}–{upto} of {total}: "
                + "; ".join(f"{step.name(o.outputs[0])} = {_expr(o, step)}" for o in chunk) + ".")
    o = chunk[0]
    out = o.outputs[0]
    v = step.value(out)
    custom = o.is_function
    what = ("a custom autograd.Function, runs its forward()" if custom
            else _FWD_WORDS.get(o.name, f"runs {o.name}"))
    text = f"Forward {upto} of {total}: {o.name} {what}: {step.name(out)} = {_expr(o, step)}"
    if v is not None:
        text += (f" = {fmt_value(v)}" if v.numel <= 3
                 else f", {v.numel} values with {fmt_value(v)}")
    if not o.is_graph:
        text += ". No gradient will flow through it: its input does not require grad"
    elif out == scene.loss:
        text += ". This is the loss"
    else:
        gf = scene.nodes[out].grad_fn
        if gf:
            text += f". PyTorch remembers how: {step.name(out)}.grad_fn is {gf}"
    return text + "."


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
    if a.data is None or b is None or b.data is None or a.data.shape != b.data.shape:
        return a
    return Value(-1, a.shape, a.dtype, a.data + b.data)


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


def _acc_mark(e) -> str:
    """fresh (.grad was None), zeros (added onto a cleared .grad) or added (the bug case)."""
    if e.fresh or e.before is None:
        return "fresh"
    return "zeros" if _is_zero(e.before) else "added"


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


def _group_events(events) -> list[list]:
    groups: list[list] = []
    for e in events:
        if groups and groups[-1][-1].kind == e.kind:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


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
            parts.append(f"{name} {fmt_value(e.before)} → {fmt_value(e.after)}" + _lr_words(e, cell))
            if cell is not None:
                cell.value = e.after
        else:
            after = "None" if e.after is None else fmt_value(e.after)
            parts.append(f"{name}.grad {fmt_value(e.before)} → {after}")
            if cell is not None:
                cell.grad = e.after
    idioms = ", ".join(dict.fromkeys(e.idiom for e in group))
    stale = kind == "update" and any(
        _acc_mark(a) == "added" for a in step.accumulations if a.tensor in {e.tensor for e in group})
    uphill = kind == "update" and next_loss is not None and step.loss is not None \
        and not next_loss <= step.loss
    if stale:
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
    if g.data is None or e.before.data is None or e.after.data is None:
        return ""
    from ..analysis.diagnostics import gradient_multiple  # torch, loaded on use

    r = gradient_multiple(e.before.data, e.after.data, g.data)
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


# -- drawing -----------------------------------------------------------------------------------------

_C = {
    "param": "#fde6c4", "param_edge": "#d9822b", "input": "#eceff1", "input_edge": "#90a4ae",
    "act": "#ffffff", "act_done": "#e7f1ff", "act_edge": "#4c6ef5", "loss_edge": "#7048e8",
    "lit": "#ffe066", "lit_edge": "#e8590c", "grad": "#c92a2a", "back": "#ffe3e3", "dim": "#ced4da",
    "bad": "#e03131", "bad_fill": "#ffc9c9", "text": "#212529", "muted": "#868e96",
}
_MARK = {  # mark -> (default words, text/edge colour, fill)
    "fresh": ("fresh: .grad was None", "#2b8a3e", "#d3f9d8"),
    "zeros": ("added onto zeros", "#2b8a3e", "#d3f9d8"),
    "added": ("ADDED to old .grad!", "#c92a2a", "#ffc9c9"),
    "update": ("value updated", "#1971c2", "#d0ebff"),
    "zero": (".grad cleared", "#6741d9", "#e5dbff"),
    "write": (".grad changed", "#e67700", "#fff3bf"),
    "none": ("not cleared", "#868e96", "#f1f3f5"),
}


def _short(v) -> str:
    """A value for a box or an edge: 3 significant digits."""
    if v is None:
        return "None"
    if v.data is not None and v.numel == 1:
        return _num3(float(v.data.reshape(-1)[0]))
    return "μ " + _num3(shown_mean(v.stats))


def _num3(x: float) -> str:
    if x == 0 or math.isnan(x) or math.isinf(x):
        return fmt_num(x)
    a = abs(x)
    return (f"{x:.3g}" if 1e-3 <= a < 1e5 else f"{x:.1e}").replace("-", "−")


class BackpropRenderer:
    """Draws the frames of a :func:`backprop_plan` on one figure; nothing moves between frames."""

    def __init__(self, trace, options):
        step = pick_step(trace, options.step)
        self._values = step.values
        self.plan = backprop_plan(trace, step, budget=options.frames)
        self.title = self.plan.title
        self.note = self.plan.note

    def __len__(self) -> int:
        return len(self.plan.frames)

    def caption(self, i: int) -> str:
        return self.plan.frames[i].caption

    _GRAPH = [0.005, 0.385, 0.99, 0.515]

    # header (title, phases), graph, parameter cards, caption
    def setup(self, fig) -> None:
        self.fig = fig
        fig.set_facecolor("white")
        self.ax_head = fig.add_axes([0.0, 0.905, 1.0, 0.095])
        self.ax_graph = fig.add_axes(self._GRAPH)
        self.ax_side = fig.add_axes([0.0, 0.19, 1.0, 0.19])
        self.ax_cap = fig.add_axes([0.0, 0.0, 1.0, 0.19])
        for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap):
            ax.set_axis_off()
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        self._geometry()
        self.ax_graph.set_xlim(*self.xlim)
        self.ax_graph.set_ylim(*self.ylim)
        self._draw_static()

    def _geometry(self) -> None:
        pos = self.plan.scene.pos
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        self.tw, self.th = 0.68, 0.76           # box size in column / row units
        self.xlim = (min(xs) - 0.37, max(xs) + 0.37)
        self.ylim = (min(ys) - 0.62, max(ys) + 0.48)   # the legend has the bottom band
        if self.ylim[1] - self.ylim[0] < 3.0:    # few rows: keep boxes from growing tall
            mid = (self.ylim[0] + self.ylim[1]) / 2
            self.ylim = (mid - 1.5, mid + 1.5)
        w_pt = self.fig.get_size_inches()[0] * self._GRAPH[2] * 72
        h_pt = self.fig.get_size_inches()[1] * self._GRAPH[3] * 72
        ux = w_pt / (self.xlim[1] - self.xlim[0])   # points per unit
        uy = h_pt / (self.ylim[1] - self.ylim[0])
        # about 15 characters across a box, four lines down it
        self.fs = max(4.5, min(9.5, self.tw * ux / (16 * 0.62), self.th * uy / 5.0))
        self.max_chars = max(12, int(self.tw * ux / (self.fs * 0.62)))

    def draw(self, i: int) -> None:
        frame = self.plan.frames[i]
        # Remove the last frame's artists (clearing the axes would rebuild their ticks,
        # which costs more than the frame itself); the static ones stay.
        for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap):
            for artist in [*ax.patches, *ax.texts, *ax.lines]:
                if artist not in self._static:
                    artist.remove()
        self._draw_head(frame, i)
        self._draw_graph(frame)
        self._draw_side(frame)
        self._draw_caption(frame)

    def animated(self) -> list:
        """This frame's artists; the title and the legend are drawn once."""
        return [a for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap)
                for a in (*ax.patches, *ax.texts, *ax.lines) if a not in self._static]

    def _draw_static(self) -> None:
        self.ax_head.text(0.01, 0.68, self.title, fontsize=11.5, weight="bold", va="center",
                          ha="left", color=_C["text"])
        legend = ("box = a tensor: name = how it was computed · [shape] value (μ: mean) · grad_fn · "
                  "grad = ∂loss/∂tensor     black arrows: values, forward     red: gradients, backward")
        self.ax_graph.text(self.xlim[0] + 0.02, self.ylim[0] + 0.02, legend, fontsize=6.5,
                           color=_C["muted"], ha="left", va="bottom")
        self._static = {*self.ax_head.texts, *self.ax_graph.texts}

    def _draw_head(self, frame: Frame, i: int) -> None:
        ax = self.ax_head
        ax.text(0.99, 0.68, f"frame {i + 1} of {len(self)}", fontsize=8, color=_C["muted"],
                va="center", ha="right")
        width_per_char = 8 * 0.6 / (self.fig.get_size_inches()[0] * 72)
        x = 0.01
        phases = self.plan.phases
        for j, p in enumerate(phases):
            label = _PHASE_LABEL.get(p, p)
            lit = p == frame.phase
            bad = lit and frame.alert
            ax.text(x, 0.2, label, fontsize=8, va="center", ha="left",
                    color=_C["text"] if lit else _C["muted"], weight="bold" if lit else "normal",
                    bbox=dict(boxstyle="round,pad=0.3", lw=1.2 if lit else 0.8,
                              fc=(_C["bad_fill"] if bad else _C["lit"]) if lit else "#f8f9fa",
                              ec=(_C["bad"] if bad else _C["lit_edge"]) if lit else "#dee2e6"))
            x += len(label) * width_per_char + 0.022
            if j < len(phases) - 1:
                ax.text(x, 0.2, "→", fontsize=9, va="center", ha="center", color="#adb5bd")
                x += 0.02

    def _draw_graph(self, frame: Frame) -> None:
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

        ax = self.ax_graph
        scene = self.plan.scene
        pos, fs = scene.pos, self.fs
        tw, th = self.tw, self.th
        backward = frame.phase not in ("intro", "forward")
        for a, b in scene.edges:
            (xa, ya), (xb, yb) = pos[a], pos[b]
            p0, p1 = (xa + tw / 2, ya), (xb - tw / 2, yb)
            done = b in frame.computed
            lit = (a, b) in frame.current_edges
            prep = scene.nodes[b].prep
            ax.add_artist(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=9,
                                         color=("#e8590c" if lit and not backward else
                                                "#495057" if done else _C["dim"]),
                                         lw=2.0 if lit and not backward else 1.0,
                                         ls="--" if prep else "-", shrinkA=0, shrinkB=0, zorder=1))
            g = frame.grad_edges.get((a, b))
            if g is None:
                continue
            off = 0.09
            ax.add_artist(FancyArrowPatch((p1[0], p1[1] - off), (p0[0], p0[1] - off),
                                         arrowstyle="-|>", mutation_scale=10, color=_C["grad"],
                                         lw=2.4 if lit else 1.1, alpha=1.0 if lit else 0.6,
                                         shrinkA=0, shrinkB=0, zorder=2))
            mx, my = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2 - off
            ax.text(mx, my - 0.04, _short(g), fontsize=fs * 0.85, color=_C["grad"], ha="center",
                    va="top", zorder=6, weight="bold" if lit else "normal",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=_C["grad"] if lit else "none",
                              lw=0.8, alpha=0.92))
        for tid, n in scene.nodes.items():
            x, y = pos[tid]
            lit = tid in frame.current
            done = tid in frame.computed
            if n.role == "param":
                fc, ec = _C["param"], _C["param_edge"]
            elif n.role == "input":
                fc, ec = _C["input"], _C["input_edge"]
            else:
                fc = _C["act_done"] if done else _C["act"]
                ec = _C["loss_edge"] if n.role == "loss" else _C["act_edge"]
            if lit:
                fc = _C["back"] if backward else _C["lit"]
                ec = _C["grad"] if backward else _C["lit_edge"]
                cell = frame.cells.get(tid)
                if cell is not None and cell.mark in _MARK and cell.mark not in ("none",):
                    fc = _MARK[cell.mark][2]
                    ec = _MARK[cell.mark][1]
            ax.add_artist(FancyBboxPatch((x - tw / 2, y - th / 2), tw, th,
                                        boxstyle="round,pad=0,rounding_size=0.06", fc=fc, ec=ec,
                                        lw=2.6 if lit else (1.8 if n.role == "loss" else 1.0),
                                        ls=(":" if not done else "--" if n.prep else "-"), zorder=3))
            lines = self._box_lines(n, frame, done)
            ys = [y + th * f for f in (0.31, 0.1, -0.1, -0.31)]
            for (text, style), yy in zip(lines, ys):
                if not text:
                    continue
                ax.text(x, yy, text, fontsize=fs * style.get("scale", 1.0), ha="center", va="center",
                        zorder=4, color=style.get("color", _C["text"]),
                        weight=style.get("weight", "normal"), clip_on=True)

    def _box_lines(self, n: SceneNode, frame: Frame, done: bool):
        tid = n.tid
        bold = {"weight": "bold"}
        muted = {"color": _C["muted"], "scale": 0.85}
        if n.op is None:
            head = n.label
            kind = {"param": "parameter", "input": "data", "loss": "loss"}.get(n.role, "tensor")
        else:
            head = f"{n.label} = {n.expr}"
            kind = n.grad_fn or ("no grad_fn" if n.prep else "")
        if len(head) > self.max_chars:
            head = head[:self.max_chars - 1] + "…"
        cell = frame.cells.get(tid)
        v = cell.value if cell is not None and cell.value is not None else self._values.get(tid)
        shape = fmt_shape(n.shape)
        if not done:
            value = f"[{shape}] ?" if n.shape else "?"
            kind = "" if n.op is not None else kind   # grad_fn exists once the op has run
        elif v is None:
            value = f"[{shape}]"
        elif v.numel == 1:
            value = _short(v)
        else:
            value = f"[{shape}] {_short(v)}"
            if v.numel == 2 and v.data is not None:
                full = "[" + ", ".join(_num3(float(x)) for x in v.data.reshape(-1).tolist()) + "]"
                value = full if len(full) <= self.max_chars else value
        updated = cell is not None and cell.mark == "update"
        if updated and cell is not None and cell.before is not None:
            value = f"{_short(cell.before)} → {_short(v)}"
        g = frame.grads.get(tid)
        grad = f"grad {_short(g)}" if g is not None else ""
        if n.role == "loss" and g is None:
            grad = "the loss"
        return [(head, bold),
                (value, {"weight": "bold" if updated else "normal",
                         "color": "#1971c2" if updated else (_C["text"] if done else _C["muted"])}),
                (kind, muted),
                (grad, {"color": _C["grad"] if g is not None else _C["loss_edge"],
                        "weight": "bold" if tid in frame.current and g is not None else "normal"})]

    def _draw_side(self, frame: Frame) -> None:
        """The parameters' cards, side by side: value and .grad, and what just happened."""
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_side
        cells = frame.cells
        if not cells:
            ax.text(0.01, 0.5, "(no leaf requires grad)", fontsize=8, va="center", color=_C["muted"])
            return
        n = len(cells)
        w = min(0.36, 0.99 / n)
        fs = 9.0 if w >= 0.3 else 8.0 if w >= 0.2 else 7.0
        x = 0.006
        for tid, cell in cells.items():
            node = self.plan.scene.nodes.get(tid)
            name = node.label if node is not None else f"t{tid}"
            mark = _MARK.get(cell.mark)
            lit = mark is not None and cell.mark != "none"
            ax.add_artist(FancyBboxPatch((x, 0.06), w - 0.008, 0.9,
                                        boxstyle="round,pad=0,rounding_size=0.02",
                                        fc=mark[2] if mark else "#f8f9fa",
                                        ec=mark[1] if mark else "#dee2e6", lw=2.2 if lit else 0.8))
            lx, vx = x + 0.012, x + 0.012 + 0.075 * min(1.0, w / 0.3)
            ax.text(lx, 0.8, name, fontsize=fs + 1, weight="bold", va="center", color=_C["text"])
            ax.text(lx + 0.01 + len(name) * (fs + 1) * 0.62 / (self.fig.get_size_inches()[0] * 72),
                    0.8, "parameter", fontsize=fs - 1.5, va="center", color=_C["muted"])
            vtxt = fmt_value(cell.value)
            if cell.mark == "update" and cell.before is not None:
                vtxt = f"{fmt_value(cell.before)} → {vtxt}"
            ax.text(lx, 0.58, "value", fontsize=fs, va="center", color="#495057")
            ax.text(vx, 0.58, vtxt, fontsize=fs, va="center",
                    color="#1971c2" if cell.mark == "update" else _C["text"],
                    weight="bold" if cell.mark == "update" else "normal")
            ax.text(lx, 0.38, ".grad", fontsize=fs, va="center", color="#495057")
            gtxt = "None" if cell.grad is None else fmt_value(cell.grad)
            strong = cell.mark in ("fresh", "zeros", "added", "zero", "write")
            ax.text(vx, 0.38, gtxt, fontsize=fs, va="center",
                    color=(_C["grad"] if cell.grad is not None and not _is_zero(cell.grad) else "#495057"),
                    weight="bold" if strong else "normal")
            if mark is not None:
                ax.text(lx, 0.18, cell.note or mark[0], fontsize=fs, va="center", color=mark[1],
                        weight="bold")
            x += w

    def _draw_caption(self, frame: Frame) -> None:
        import textwrap

        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_cap
        alert = frame.alert
        ax.add_artist(FancyBboxPatch((0.006, 0.05), 0.988, 0.9, boxstyle="round,pad=0,rounding_size=0.03",
                                    fc="#fff5f5" if alert else "#f8f9fa",
                                    ec=_C["bad"] if alert else "#dee2e6", lw=1.6 if alert else 0.8))
        width_pt = self.fig.get_size_inches()[0] * 72 * 0.97
        fs = 10.0
        for fs in (10.0, 9.0, 8.0, 7.2):
            lines = textwrap.wrap(frame.caption, width=int(width_pt / (fs * 0.56)))
            if len(lines) <= 3:
                break
        ax.text(0.015, 0.86, "\n".join(lines[:4]), fontsize=fs, va="top", ha="left", linespacing=1.3,
                color="#a51111" if alert else _C["text"])
        if frame.code:
            ax.text(0.015, 0.12, frame.code, fontsize=8, family="monospace", color="#495057",
                    va="bottom", ha="left")
