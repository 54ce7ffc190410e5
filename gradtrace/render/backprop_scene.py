"""The back-propagation explainer's fixed picture: one box per tensor and the edges between
them, read off a step's graph model, placed where `gradtrace graph` and the explorer place
that step's graph (:func:`_scene`). Pure: no drawing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..formatting import slide_number as fmt_num
from .explorer_graph import OPTIONS, Geometry

#: How the picture is laid out: the explorer's options (the graph `gradtrace graph` draws,
#: no legend, no title) in graph.svg's theme, whose boxes are sized for slide-sized text.
PICTURE = dataclasses.replace(OPTIONS, theme="lecture")

__all__ = ["SceneNode", "Scene", "PICTURE"]

Key = tuple  # ("t", tid) for a tensor, ("o", op index) for an op

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
    title: str = ""   # the name `gradtrace graph` gives the node it shows (``matmul``)


@dataclass(frozen=True)
class Scene:
    """The fixed picture. What the frames talk about, read off the step's forward graph
    (:func:`_scene`): tensor boxes (``nodes``, by tid), ``edges`` (input tid, output tid),
    the ``loss`` and the ``params``. Where it is drawn: ``picture``, the
    :class:`~gradtrace.render.explorer_graph.Geometry` of the step's graph model as
    `gradtrace graph` and the explorer lay it out (both views in one: AccumulateGrad nodes
    and the dashed gradient edges into ``.grad`` included; points, y down), ``shows`` (a
    picture node -> the tids it stands for, the one whose value it shows first), ``box_of``
    (a tid -> the picture node of its box), ``carries`` (for each of ``picture.edges``, the
    scene edges whose value and gradient travel along it) and ``pos`` (a tid -> the centre
    of its box, in the picture's points)."""

    nodes: dict[int, SceneNode]
    edges: tuple[tuple[int, int], ...]
    loss: int
    params: tuple[int, ...]
    picture: Geometry
    shows: dict[int, tuple[int, ...]]
    box_of: dict[int, int]
    carries: tuple[tuple[tuple[int, int], ...], ...]
    pos: dict[int, tuple[float, float]]

    def edges_into(self, tid: int) -> list[tuple[int, int]]:
        return [e for e in self.edges if e[1] == tid]


def _picture(step, nodes: dict[int, SceneNode], edges, warn=None):
    """The picture of ``step``: its graph model laid out as the explorer lays it out, and
    which of the scene's tensors and edges each picture node and edge shows."""
    from ..analysis.graph import build_graph
    from .explorer_graph import geometry

    model = build_graph(step, PICTURE.view, budget=PICTURE.budget)
    geo = geometry(model, PICTURE, warn=warn)
    g = model.graph
    ops = {o.index: o for o in step.ops}
    bw = step.backward
    order = {t: i for i, t in enumerate(nodes)}

    def tid_of(ref) -> int | None:
        kind, x = ref
        if kind in ("tensor", "loss"):
            return x
        if kind == "op" and x in ops and ops[x].outputs:
            return ops[x].outputs[0]
        if kind == "node" and bw is not None and 0 <= x < len(bw.nodes):
            return bw.nodes[x].variable
        return None

    shows: dict[int, tuple[int, ...]] = {}
    box_of: dict[int, int] = {}
    for n in sorted(geo.nodes):
        a = g.nodes[n]
        refs = [a["ref"], *a.get("members", ())]
        tids: list[int] = [t for t in dict.fromkeys(tid_of(r) for r in refs) if t is not None and t in nodes]
        # a collapsed node shows its last tensor (the one that leaves it) first
        tids.sort(key=lambda t: -order[t] if len(refs) > 1 else 0)
        shows[n] = tuple(tids)
        for t in tids:
            # a tensor's box: its op's node (the loss's too), else its leaf, else a group
            if a["kind"] in ("loss", "accumulate") or (t in box_of and len(refs) > 1):
                continue
            box_of.setdefault(t, n)
    for n, shown in shows.items():
        for t in shown:
            box_of.setdefault(t, n)
    carries = []
    for e in geo.edges:
        u, v = shows.get(e["from"], ()), shows.get(e["to"], ())
        if e["kind"] == "grad":   # into an AccumulateGrad, or from it to its parameter
            carries.append(tuple(x for x in edges if x[0] in v and x[1] in u)
                           if g.nodes[e["to"]]["kind"] == "accumulate" else ())
        else:
            carries.append(tuple(x for x in edges if x[0] in u and x[1] in v))
    pos = {}
    for t, n in box_of.items():
        b = geo.nodes[n]
        pos[t] = (b["x"] + b["w"] / 2, b["y"] + b["h"] / 2)
    return geo, shows, box_of, tuple(carries), pos


def _scene(step, warn=None) -> Scene:
    """The scene of a step, read off its graph model (the forward view, uncollapsed): one
    box per tensor (an op's box is its output), the ops the loss depends on and their
    leaves, placed as the picture of the step's graph model places them (:func:`_picture`)."""
    import networkx as nx

    from ..analysis.graph import build_graph

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
                                 o.index, _expr(o, step), grad_fn.get(o.index), not o.is_graph,
                                 str(g.nodes[n].get("title") or o.name))
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
    params = [t for t, n in nodes.items() if n.role == "param"]
    for e in step.events:
        info = step.tensors.get(e.tensor)
        if e.tensor not in params and info is not None and info.requires_grad:
            params.append(e.tensor)
    picture, shows, box_of, carries, pos = _picture(step, nodes, edges, warn)
    return Scene(nodes, tuple(edges), loss, tuple(params), picture, shows, box_of, carries, pos)


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
