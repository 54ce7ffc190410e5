"""The back-propagation explainer's fixed picture: one box per tensor, the edges between
them and their places, read off a step's graph model (:func:`_scene`). Pure: no drawing."""

from __future__ import annotations

from dataclasses import dataclass

from ..formatting import slide_number as fmt_num

__all__ = ["SceneNode", "Scene"]

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
