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
from ..formatting import shape_times as fmt_shape
from ..formatting import short_value as _short
from ..formatting import short_number as _num3
from ..formatting import slide_number as fmt_num
from ..formatting import value as fmt_value

if TYPE_CHECKING:  # the model module is only imported where values are added
    from ..tracefile.model import GradNode

__all__ = ["Scene", "Frame", "Plan", "ParamCell", "backprop_plan", "BackpropRenderer",
           "fmt_num", "fmt_value", "pick_step"]

Key = tuple  # ("t", tid) for a tensor, ("o", op index) for an op


# -- numbers in words ---------------------------------------------------------------------------

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
    """The fixed picture, read off the step's graph model (:func:`_scene`): tensor boxes,
    edges (input tid, output tid) and positions from the model's layers."""

    nodes: dict[int, SceneNode]
    edges: tuple[tuple[int, int], ...]
    pos: dict[int, tuple[float, float]]
    loss: int
    params: tuple[int, ...]

    def edges_into(self, tid: int) -> list[tuple[int, int]]:
        return [e for e in self.edges if e[1] == tid]


def _positions(nodes: dict[int, SceneNode], edges, col: dict[int, int]) -> dict[int, tuple[float, float]]:
    """Fixed positions: ``col`` (from the graph's one ranking, leaves on the left, the loss
    on the right) across, and rows by spreading each box's inputs around it, from the loss
    backwards."""
    pred: dict[int, list[int]] = {k: [] for k in nodes}
    for a, b in edges:
        pred[b].append(a)
    order = list(nodes)  # the graph model's node order: topological
    rank = {k: i for i, k in enumerate(order)}
    n_cols = max(col.values()) + 1
    want: dict[int, list[float]] = {}
    y: dict[int, float] = {}
    for c in range(n_cols - 1, -1, -1):
        here = [k for k in order if col[k] == c]
        if not here:
            continue
        for k in here:
            w = want.get(k)
            y[k] = sum(w) / len(w) if w else 0.0
        here.sort(key=lambda k: (y[k], rank[k]))
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
    """The scene of a step, read off its graph model (the forward view, uncollapsed): one
    box per tensor (an op's box is its output), the ops the loss depends on and their
    leaves, placed by the model's layers."""
    import networkx as nx

    from ..analysis.graph import build_graph, layers

    bw = step.backward
    loss = bw.roots[0]
    model = build_graph(step, "forward", expand=True)
    g = model.graph
    ops = {o.index: o for o in step.ops if o.parent is None}
    grad_fn = {n.op: n.name for n in bw.nodes if n.op is not None}

    def op_of(n):
        kind, x = g.nodes[n]["ref"]
        return ops.get(x) if kind == "op" else None

    # ops after backward() (the update) are not part of the picture
    keep = [n for n in g.nodes if (o := op_of(n)) is None or o.seq < bw.seq]
    h = g.subgraph(keep)
    start = next((n for n in keep if g.nodes[n]["ref"] == ("loss", loss)), None)
    needed = sorted(nx.ancestors(h, start)) if start is not None else []
    # the loss node stands for the tensor the op before it produced
    tid_of: dict[int, int] = {}
    for n in needed:
        kind, x = g.nodes[n]["ref"]
        if kind == "tensor":
            tid_of[n] = x
        elif (o := op_of(n)) is not None and o.outputs:
            tid_of[n] = o.outputs[0]
    for n in (h.predecessors(start) if start is not None else ()):
        if op_of(n) is not None:
            tid_of[n] = loss
    nodes: dict[int, SceneNode] = {}
    node_of: dict[int, int] = {}        # tid -> the model node its box shows
    for n in needed:
        if n not in tid_of:
            continue
        t = tid_of[n]
        info = step.tensors.get(t)
        v = step.value(t)
        shape = tuple(info.shape if info is not None else (v.shape if v is not None else ()))
        o = op_of(n)
        if o is None:
            role = "param" if info is not None and info.requires_grad else "input"
            nodes[t] = SceneNode(t, step.name(t), "loss" if t == loss else role, shape)
        elif t in nodes and t in o.inputs and o.index not in grad_fn:
            continue  # an op that returned its input (loss.to('cpu')): the box stays the input's
        else:  # an op that writes its input in place takes over that input's box
            nodes.pop(t, None)
            nodes[t] = SceneNode(t, step.name(t), "loss" if t == loss else "activation", shape,
                                 o.index, _expr(o, step), grad_fn.get(o.index), not o.is_graph)
        node_of[t] = n
    if loss not in nodes:
        info = step.tensors.get(loss)
        v = step.value(loss)
        nodes[loss] = SceneNode(loss, step.name(loss), "loss",
                                tuple(info.shape if info is not None else (v.shape if v is not None else ())))
    # edges between boxes, an op's inputs in order; a tensor fed to its own op (an op
    # recorded as its own input, such as loss.to('cpu')) is no edge
    edges: list[tuple[int, int]] = []
    for n in needed:
        if op_of(n) is None or n not in tid_of:
            continue
        for u, _, a in sorted(h.in_edges(n, data=True), key=lambda e: e[2]["slot"]):
            if u in tid_of and tid_of[u] != tid_of[n] and (tid_of[u], tid_of[n]) not in edges:
                edges.append((tid_of[u], tid_of[n]))
    # a box's column: the last of its model nodes' layers (an op on its own output, or in
    # place, puts its box after the op before it); empty columns closed up
    last: dict[int, int] = {}
    for c, layer in enumerate(layers(model, [n for n in needed if n in tid_of])):
        for n in layer:
            last[tid_of[n]] = max(last.get(tid_of[n], c), c)
    last.setdefault(loss, max(last.values(), default=-1) + 1)
    used = {c: i for i, c in enumerate(sorted(set(last.values())))}
    col = {t: used[c] for t, c in last.items()}
    params = [t for t, n in nodes.items() if n.role == "param"]
    for e in step.events:
        info = step.tensors.get(e.tensor)
        if e.tensor not in params and info is not None and info.requires_grad:
            params.append(e.tensor)
    return Scene(nodes, tuple(edges), _positions(nodes, edges, col), loss, tuple(params))


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


#: Sizes below are in pixels of a frame 1600 pixels wide (a 1920x1080 slide's picture
#: scaled down) and scale with the figure's width: the same frame at any size or dpi.
_REF_WIDTH = 1600
#: The smallest text drawn, in those pixels: legible on a slide from the back of a room.
MIN_FONT_PX = 14


class _Fit:
    """Text measured with the figure's own renderer (the extents matplotlib will draw),
    and shortened with an ellipsis to fit a width. Widths are in points."""

    def __init__(self, fig):
        self.renderer = fig.canvas.get_renderer()
        self.scale = 72.0 / fig.dpi
        self.cache: dict[tuple, float] = {}

    def width(self, text: str, size: float, weight: str = "normal", family: str = "sans-serif") -> float:
        key = (text, size, weight, family)
        w = self.cache.get(key)
        if w is None:
            from matplotlib.font_manager import FontProperties

            prop = FontProperties(family=family, size=size, weight=weight)
            w = self.renderer.get_text_width_height_descent(text, prop, ismath=False)[0] * self.scale
            self.cache[key] = w
        return w

    def shorten(self, text: str, width: float, size: float, weight: str = "normal",
                family: str = "sans-serif") -> str:
        """``text``, or its longest start that fits ``width`` with an ellipsis after it."""
        if self.width(text, size, weight, family) <= width:
            return text
        lo, hi = 0, len(text)          # text[:lo] + "…" fits, text[:hi] + "…" does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.width(text[:mid].rstrip() + "…", size, weight, family) <= width:
                lo = mid
            else:
                hi = mid
        out = text[:lo].rstrip() + "…"
        return out if self.width(out, size, weight, family) <= width else ""

    def first(self, variants, width: float, size: float, weight: str = "normal",
              family: str = "sans-serif") -> str:
        """The first of ``variants`` (longest, most complete first) that fits, else the
        last one shortened."""
        for v in variants:
            if self.width(v, size, weight, family) <= width:
                return v
        return self.shorten(variants[-1], width, size, weight, family)

    def wrap(self, text: str, width: float, size: float) -> list[str]:
        """Greedy word wrap by measured width; a word wider than a line is shortened."""
        lines: list[str] = []
        line = ""
        for word in text.split():
            cand = f"{line} {word}" if line else word
            if self.width(cand, size) <= width:
                line = cand
                continue
            if line:
                lines.append(line)
            line = word if self.width(word, size) <= width else self.shorten(word, width, size)
        if line:
            lines.append(line)
        return lines


class BackpropRenderer:
    """Draws the frames of a :func:`backprop_plan` on one figure; nothing moves between frames.

    Every text is measured and shortened to fit the box it is drawn in, at no less than
    :data:`MIN_FONT_PX`; every text is plain text (no mathtext: a ``$`` in a name is a
    ``$``). :attr:`fitted` lists (box, text) pairs: each text drawn inside a box."""

    def __init__(self, trace, options):
        step = pick_step(trace, options.step)
        self._values = step.values
        self.plan = backprop_plan(trace, step, budget=options.frames)
        self.title = self.plan.title
        self.note = self.plan.note
        self.fitted: list = []

    def __len__(self) -> int:
        return len(self.plan.frames)

    def caption(self, i: int) -> str:
        return self.plan.frames[i].caption

    _HEAD = [0.0, 0.905, 1.0, 0.095]
    _GRAPH = [0.005, 0.385, 0.99, 0.515]
    _SIDE = [0.0, 0.19, 1.0, 0.19]
    _CAP = [0.0, 0.0, 1.0, 0.19]

    # header (title, phases), graph, parameter cards, caption
    def setup(self, fig) -> None:
        self.fig = fig
        fig.set_facecolor("white")
        self.ax_head = fig.add_axes(self._HEAD)
        self.ax_graph = fig.add_axes(self._GRAPH)
        self.ax_side = fig.add_axes(self._SIDE)
        self.ax_cap = fig.add_axes(self._CAP)
        for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap):
            ax.set_axis_off()
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        self.W, self.H = (float(v) * 72 for v in fig.get_size_inches())   # points
        self.px = self.W / _REF_WIDTH            # points per reference pixel
        self.min_fs = MIN_FONT_PX * self.px
        self.fit = _Fit(fig)
        self._geometry()
        self.ax_graph.set_xlim(*self.xlim)
        self.ax_graph.set_ylim(*self.ylim)
        self._draw_static()

    def _fs(self, ref_px: float) -> float:
        """A font size in points for ``ref_px`` reference pixels, never below the minimum."""
        return max(self.min_fs, ref_px * self.px)

    def _text(self, ax, x, y, text, size, box=None, **kw):
        """ax.text, as plain text (never mathtext); ``box``: the patch it must stay inside."""
        t = ax.text(x, y, text, fontsize=size, parse_math=False, **kw)
        if box is not None:
            self.fitted.append((box, t))
        return t

    def _geometry(self) -> None:
        pos = self.plan.scene.pos
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        self.tw, self.th = 0.72, 0.78           # box size in column / row units
        self.legend_fs = self.min_fs
        legend_band = 1.9 * self.legend_fs       # points, at the bottom of the graph
        w_pt = self.W * self._GRAPH[2]
        h_pt = self.H * self._GRAPH[3]
        self.xlim = (min(xs) - 0.40, max(xs) + 0.40)
        rows = max(ys) - min(ys) + 1.0 + 0.2
        rows = max(rows, 3.0)                    # few rows: keep boxes from growing tall
        uy = (h_pt - legend_band) / rows        # points per row
        mid = (min(ys) + max(ys)) / 2
        self.ylim = (mid - rows / 2 - legend_band / uy, mid + rows / 2)
        self.ux = w_pt / (self.xlim[1] - self.xlim[0])   # points per unit
        self.uy = uy
        self.box_w = self.tw * self.ux           # points
        self.box_h = self.th * self.uy
        self.pad = 8 * self.px
        # the font: four lines in a box, between the minimum and 22 reference pixels
        self.fs = max(self.min_fs, min(22 * self.px, (self.box_h - self.pad) / (4 * 1.28)))
        self.lines_fit = max(1, min(4, int((self.box_h - self.pad) / (self.fs * 1.28))))

    def draw(self, i: int) -> None:
        frame = self.plan.frames[i]
        # Remove the last frame's artists (clearing the axes would rebuild their ticks,
        # which costs more than the frame itself); the static ones stay.
        for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap):
            for artist in [*ax.patches, *ax.texts, *ax.lines]:
                if artist not in self._static:
                    artist.remove()
        self.fitted = [(b, t) for b, t in self.fitted if t in self._static]
        self._draw_head(frame, i)
        self._draw_graph(frame)
        self._draw_side(frame)
        self._draw_caption(frame)

    def animated(self) -> list:
        """This frame's artists; the title and the legend are drawn once."""
        return [a for ax in (self.ax_head, self.ax_graph, self.ax_side, self.ax_cap)
                for a in (*ax.patches, *ax.texts, *ax.lines) if a not in self._static]

    def _draw_static(self) -> None:
        from matplotlib.patches import Rectangle

        # the head's title and counter, and the graph's legend line, each within its band
        counter_w = self.fit.width(f"frame {len(self)} of {len(self)}", self._fs(17)) + 30 * self.px
        title_fs = self._fs(26)
        title = self.fit.shorten(self.title, self.W * 0.99 - counter_w - 16 * self.px, title_fs, "bold")
        self.head_band = Rectangle((0, 0.5), 1, 0.5, visible=False, transform=self.ax_head.transAxes)
        self.ax_head.add_artist(self.head_band)
        self._text(self.ax_head, 0.01, 0.72, title, title_fs, self.head_band, weight="bold",
                   va="center", ha="left", color=_C["text"])
        legend = ("box = a tensor: name = how it was computed · [shape] value (μ: mean) · grad_fn · "
                  "grad = ∂loss/∂tensor     black arrows: values, forward     red: gradients, backward")
        legend = self.fit.shorten(legend, self.W * self._GRAPH[2] - 12 * self.px, self.legend_fs)
        self._text(self.ax_graph, self.xlim[0] + 4 * self.px / self.ux, self.ylim[0] + 0.25 * self.legend_fs / self.uy,
                   legend, self.legend_fs, color=_C["muted"], ha="left", va="bottom")
        self._static = {*self.ax_head.texts, *self.ax_graph.texts, self.head_band}

    def _draw_head(self, frame: Frame, i: int) -> None:
        ax = self.ax_head
        self._text(ax, 0.99, 0.72, f"frame {i + 1} of {len(self)}", self._fs(17), color=_C["muted"],
                   va="center", ha="right")
        phases = self.plan.phases
        labels = [_PHASE_LABEL.get(p, p) for p in phases]
        pad, arrow = 10 * self.px, 34 * self.px      # points: a chip's padding, the gap with →
        fs = self._fs(17)
        for size in (17, 16, 15, MIN_FONT_PX):
            fs = self._fs(size)
            total = sum(self.fit.width(lab, fs, "bold" if p == frame.phase else "normal") + 2 * pad
                        for p, lab in zip(phases, labels)) + arrow * (len(labels) - 1)
            if total <= self.W * 0.98:
                break
        x = 0.01
        for j, (p, label) in enumerate(zip(phases, labels)):
            lit = p == frame.phase
            bad = lit and frame.alert
            self._text(ax, x + pad / self.W, 0.24, label, fs, va="center", ha="left",
                       color=_C["text"] if lit else _C["muted"], weight="bold" if lit else "normal",
                       bbox=dict(boxstyle=f"round,pad={pad / fs:.3f}", lw=1.6 if lit else 1.0,
                                 fc=(_C["bad_fill"] if bad else _C["lit"]) if lit else "#f8f9fa",
                                 ec=(_C["bad"] if bad else _C["lit_edge"]) if lit else "#dee2e6"))
            x += (self.fit.width(label, fs, "bold" if lit else "normal") + 2 * pad) / self.W
            if j < len(phases) - 1:
                self._text(ax, x + arrow / 2 / self.W, 0.24, "→", fs, va="center", ha="center",
                           color="#adb5bd")
                x += arrow / self.W

    def _draw_graph(self, frame: Frame) -> None:
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

        ax = self.ax_graph
        scene = self.plan.scene
        pos, fs = scene.pos, self.fs
        tw, th = self.tw, self.th
        backward = frame.phase not in ("intro", "forward")
        edge_fs = max(self.min_fs, fs * 0.85)
        for a, b in scene.edges:
            (xa, ya), (xb, yb) = pos[a], pos[b]
            p0, p1 = (xa + tw / 2, ya), (xb - tw / 2, yb)
            done = b in frame.computed
            lit = (a, b) in frame.current_edges
            prep = scene.nodes[b].prep
            ax.add_artist(FancyArrowPatch(p0, p1, arrowstyle="-|>", mutation_scale=14 * self.px,
                                         color=("#e8590c" if lit and not backward else
                                                "#495057" if done else _C["dim"]),
                                         lw=(2.6 if lit and not backward else 1.3) * self.px * 1.4,
                                         ls="--" if prep else "-", shrinkA=0, shrinkB=0, zorder=1))
            g = frame.grad_edges.get((a, b))
            if g is None:
                continue
            off = 0.09
            ax.add_artist(FancyArrowPatch((p1[0], p1[1] - off), (p0[0], p0[1] - off),
                                         arrowstyle="-|>", mutation_scale=15 * self.px, color=_C["grad"],
                                         lw=(3.0 if lit else 1.4) * self.px * 1.4, alpha=1.0 if lit else 0.6,
                                         shrinkA=0, shrinkB=0, zorder=2))
            mx, my = (p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2 - off
            label = _short(g)
            weight = "bold" if lit else "normal"
            if self.fit.width(label, edge_fs, weight) + 0.6 * edge_fs > (p1[0] - p0[0]) * self.ux:
                continue  # no room between the boxes: the box it reaches shows the gradient
            self._text(ax, mx, my - 0.04, label, edge_fs, color=_C["grad"], ha="center",
                       va="top", zorder=6, weight="bold" if lit else "normal",
                       bbox=dict(boxstyle="round,pad=0.15", fc="white", ec=_C["grad"] if lit else "none",
                                 lw=0.8, alpha=0.92))
        inner = self.box_w - 2 * self.pad
        pitch = fs * 1.28 / self.uy                       # one line, in row units
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
            box = FancyBboxPatch((x - tw / 2, y - th / 2), tw, th,
                                 boxstyle="round,pad=0,rounding_size=0.06", fc=fc, ec=ec,
                                 lw=(2.6 if lit else (1.8 if n.role == "loss" else 1.0)) * self.px * 1.4,
                                 ls=(":" if not done else "--" if n.prep else "-"), zorder=3)
            ax.add_artist(box)
            lines = [ln for ln in self._box_lines(n, frame, done) if ln[0]]
            lines = self._keep(lines)
            top = y + (len(lines) - 1) * pitch / 2
            for k, (variants, style) in enumerate(lines):
                size = max(self.min_fs, fs * style.get("scale", 1.0))
                weight = style.get("weight", "normal")
                text = self.fit.first(variants, inner, size, weight)
                if text:
                    self._text(ax, x, top - k * pitch, text, size, box, ha="center", va="center",
                               zorder=4, color=style.get("color", _C["text"]), weight=weight)

    def _keep(self, lines):
        """The lines a box has room for: the name first, then the value and the gradient;
        the grad_fn line goes first when there is not room for all four."""
        order = {"head": 0, "grad": 1, "value": 2, "kind": 3}
        if len(lines) <= self.lines_fit:
            return lines
        kept = sorted(lines, key=lambda ln: order[ln[1]["role"]])[:self.lines_fit]
        return [ln for ln in lines if ln in kept]

    def _box_lines(self, n: SceneNode, frame: Frame, done: bool):
        """The lines of a box: (variants, longest first; style)."""
        tid = n.tid
        if n.op is None:
            head = n.label
            kind = {"param": "parameter", "input": "data", "loss": "loss"}.get(n.role, "tensor")
        else:
            head = f"{n.label} = {n.expr}"
            kind = n.grad_fn or ("no grad_fn" if n.prep else "")
        cell = frame.cells.get(tid)
        v = cell.value if cell is not None and cell.value is not None else self._values.get(tid)
        shape = fmt_shape(n.shape)
        if not done:
            value: tuple = (f"[{shape}] ?", "?") if n.shape else ("?",)
            kind = "" if n.op is not None else kind   # grad_fn exists once the op has run
        elif v is None:
            value = (f"[{shape}]",)
        elif v.numel == 1:
            value = (_short(v),)
        else:
            value = (f"[{shape}] {_short(v)}", _short(v))
            if v.numel == 2 and v.data is not None:
                full = "[" + ", ".join(_num3(float(x)) for x in v.data.reshape(-1).tolist()) + "]"
                value = (full,) + value
        updated = cell is not None and cell.mark == "update"
        if updated and cell is not None and cell.before is not None:
            value = (f"{_short(cell.before)} → {_short(v)}", f"→ {_short(v)}")
        g = frame.grads.get(tid)
        grad = (f"grad {_short(g)}", _short(g)) if g is not None else ("",)
        if n.role == "loss" and g is None:
            grad = ("the loss",)
        return [((head,), {"weight": "bold", "role": "head"}),
                (value, {"weight": "bold" if updated else "normal", "role": "value",
                         "color": "#1971c2" if updated else (_C["text"] if done else _C["muted"])}),
                ((kind,), {"color": _C["muted"], "scale": 0.85, "role": "kind"}),
                (grad, {"color": _C["grad"] if g is not None else _C["loss_edge"], "role": "grad",
                        "weight": "bold" if tid in frame.current and g is not None else "normal"})]

    def _draw_side(self, frame: Frame) -> None:
        """The parameters' cards, side by side (in two rows when there are many): value and
        .grad, and what just happened."""
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_side
        cells = list(frame.cells.items())
        if not cells:
            self._text(ax, 0.01, 0.5, "(no leaf requires grad)", self._fs(18), va="center",
                       color=_C["muted"])
            return
        per_row = min(len(cells), 5)
        rows = 1 if len(cells) <= per_row else 2
        shown = cells if len(cells) <= per_row * rows else cells[:per_row * rows - 1]
        more = len(cells) - len(shown)
        w = min(0.36, 0.99 / per_row)             # axes fraction
        h = 0.94 / rows
        card_w, card_h = w * self.W - 0.008 * self.W, h * self.H * self._SIDE[3]
        lines = 4
        fs = max(self.min_fs, min(20 * self.px, (card_h - 2 * self.pad) / (lines * 1.3)))
        pitch = fs * 1.3 / (self.H * self._SIDE[3])   # axes fraction per line
        inner = card_w - 2 * self.pad
        for k, (tid, cell) in enumerate(shown + ([(None, None)] if more else [])):
            x = 0.006 + (k % per_row) * w
            y0 = 0.03 + (rows - 1 - k // per_row) * h
            top = y0 + h - 0.03 - pitch * 0.6
            if tid is None:
                box = FancyBboxPatch((x, y0), w - 0.008, h - 0.03, boxstyle="round,pad=0,rounding_size=0.02",
                                     fc="#f8f9fa", ec="#dee2e6", lw=0.8)
                ax.add_artist(box)
                self._text(ax, x + self.pad / self.W, y0 + (h - 0.03) / 2,
                           self.fit.shorten(f"… and {more} more parameters", inner, fs),
                           fs, box, va="center", color=_C["muted"])
                continue
            assert cell is not None
            node = self.plan.scene.nodes.get(tid)
            name = node.label if node is not None else f"t{tid}"
            mark = _MARK.get(cell.mark)
            lit = mark is not None and cell.mark != "none"
            box = FancyBboxPatch((x, y0), w - 0.008, h - 0.03, boxstyle="round,pad=0,rounding_size=0.02",
                                 fc=mark[2] if mark else "#f8f9fa",
                                 ec=mark[1] if mark else "#dee2e6", lw=2.2 if lit else 0.8)
            ax.add_artist(box)
            lx = x + self.pad / self.W
            name_fs = fs * 1.08
            shown_name = self.fit.shorten(name, inner, name_fs, "bold")
            self._text(ax, lx, top, shown_name, name_fs, box, weight="bold", va="center",
                       color=_C["text"])
            tag_x = self.fit.width(shown_name, name_fs, "bold") + 8 * self.px
            tag = self.fit.shorten("parameter", inner - tag_x, self.min_fs)
            if tag:
                self._text(ax, lx + tag_x / self.W, top, tag, self.min_fs, box, va="center",
                           color=_C["muted"])
            label_w = max(self.fit.width(t, fs) for t in ("value", ".grad")) + 14 * self.px
            vx = lx + label_w / self.W
            vtxt = fmt_value(cell.value)
            variants: tuple[str, ...] = (vtxt,)
            if cell.mark == "update" and cell.before is not None:
                variants = (f"{fmt_value(cell.before)} → {vtxt}", f"→ {vtxt}")
            up = cell.mark == "update"
            self._text(ax, lx, top - pitch, "value", fs, box, va="center", color="#495057")
            self._text(ax, vx, top - pitch, self.fit.first(variants, inner - label_w, fs, "bold" if up else "normal"),
                       fs, box, va="center", color="#1971c2" if up else _C["text"],
                       weight="bold" if up else "normal")
            gtxt = "None" if cell.grad is None else fmt_value(cell.grad)
            strong = cell.mark in ("fresh", "zeros", "added", "zero", "write")
            self._text(ax, lx, top - 2 * pitch, ".grad", fs, box, va="center", color="#495057")
            self._text(ax, vx, top - 2 * pitch,
                       self.fit.shorten(gtxt, inner - label_w, fs, "bold" if strong else "normal"), fs, box,
                       va="center", weight="bold" if strong else "normal",
                       color=(_C["grad"] if cell.grad is not None and not _is_zero(cell.grad) else "#495057"))
            if mark is not None:
                self._text(ax, lx, top - 3 * pitch, self.fit.shorten(cell.note or mark[0], inner, fs, "bold"),
                           fs, box, va="center", color=mark[1], weight="bold")

    def _draw_caption(self, frame: Frame) -> None:
        from matplotlib.patches import FancyBboxPatch

        ax = self.ax_cap
        alert = frame.alert
        box = FancyBboxPatch((0.006, 0.05), 0.988, 0.9, boxstyle="round,pad=0,rounding_size=0.03",
                             fc="#fff5f5" if alert else "#f8f9fa",
                             ec=_C["bad"] if alert else "#dee2e6", lw=1.6 if alert else 0.8)
        ax.add_artist(box)
        band = self.H * self._CAP[3]                       # points
        inner_w = 0.988 * self.W - 2 * 14 * self.px
        code_fs = self.min_fs
        code_h = 1.6 * code_fs if frame.code else 0.0
        room = 0.9 * band - 2 * self.pad - code_h          # points for the caption's lines
        lines: list[str] = []
        fs = self.min_fs
        for ref in (22, 20, 18, 16, 15, MIN_FONT_PX):
            fs = self._fs(ref)
            lines = self.fit.wrap(frame.caption, inner_w, fs)
            if len(lines) * fs * 1.3 <= room:
                break
        most = max(1, int(room / (fs * 1.3)))
        if len(lines) > most:
            lines = lines[:most - 1] + [self.fit.shorten(lines[most - 1] + " " + " ".join(lines[most:]),
                                                         inner_w, fs)]
        self._text(ax, 0.006 + 14 * self.px / self.W, 0.95 - self.pad / band, "\n".join(lines), fs, box,
                   va="top", ha="left", linespacing=1.3, color="#a51111" if alert else _C["text"])
        if frame.code:
            self._text(ax, 0.006 + 14 * self.px / self.W, 0.05 + self.pad / band,
                       self.fit.shorten(frame.code, inner_w, code_fs, family="monospace"), code_fs, box,
                       family="monospace", color="#495057", va="bottom", ha="left")
