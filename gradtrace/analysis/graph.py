"""The graph model of one recorded step: a networkx graph with stable, sequential node ids.

Three views of the same step:

- ``forward``: data flow. Leaves (parameters and inputs, named as the user named them),
  forward ops (prep ops such as ``y.reshape(...)`` included, dimmed by the renderer) and
  the loss. Edges run from a tensor's producer to its consumer, labelled with its shape.
- ``backward``: the grad_fn graph autograd walked (what torchviz shows): the loss, grad_fn
  nodes, AccumulateGrad nodes and the parameters they write ``.grad`` of. Edges run the way
  the gradient flows, labelled with the gradient's shape.
- ``both``: the forward graph with the gradient that flowed back through every node, plus
  one AccumulateGrad node per parameter, reached by a dashed gradient edge from the op whose
  backward fed it.

Node ids are ``0..n-1`` in a topological order fixed by the recorded op order, never by
object identity or set order, so the same trace gives the same graph every time. Above a
node budget, module calls collapse (deepest module level first) and runs of repeated
identical sub-graphs collapse into one "× N" node; ``expand=True`` turns that off. A
folded repetition keeps its parameters and their AccumulateGrad nodes drawn (the same
parameter of several folded repetitions as one node) unless even then the picture would
not fit its budget; the "× N" node then holds them and says how many.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

__all__ = ["GraphModel", "build_graph", "layers", "VIEWS", "BUDGET", "NODE_KINDS"]

VIEWS = ("forward", "backward", "both")
#: Above this many nodes (by default), module calls and repeated sub-graphs collapse.
BUDGET = 24
#: What a node can be. ``prep`` ops feed the graph from a named tensor without building it;
#: ``module`` and ``repeat`` nodes stand for collapsed sub-graphs.
NODE_KINDS = ("param", "input", "op", "prep", "loss", "grad_fn", "accumulate", "module", "repeat")


@dataclass
class GraphModel:
    """A step's graph in one view. ``graph`` is a ``networkx.MultiDiGraph`` whose nodes are
    ``0..n-1`` in topological order. Node attributes:

    ``kind`` (one of :data:`NODE_KINDS`), ``title`` (``w``, ``matmul``, ``MmBackward0``),
    ``detail`` (constant arguments, the grad_fn of an op, what a collapsed node holds...),
    ``shape`` (of the tensor the node holds or produces, or None), ``data`` and ``grad``
    (:class:`~gradtrace.tracefile.model.Value` or None), ``source``
    (:class:`~gradtrace.tracefile.model.Source` or None), ``module`` (the ``nn.Module`` path the
    node belongs to, or None), ``ref`` (``("tensor", tid)``, ``("op", index)``,
    ``("node", nid)``, ``("loss", tid)`` or ``("group", key)``), ``note`` (one line of
    extra explanation or ""), ``count`` (ops folded into the node, or parameters or
    AccumulateGrad nodes of folded repetitions folded into a leaf; 1 for plain nodes),
    ``options`` (an op's keyword options, ``reduction='mean'``, or ""); a collapsed node
    also has ``members``, the ``ref`` of every node folded into it.

    Edge attributes: ``kind`` (``data`` or ``grad``), ``shape`` (or None) and ``slot`` (the
    input position at the consumer, or the output position of a grad_fn).
    """

    graph: Any
    view: str
    step: int
    loss: float | None
    collapsed: int = 0          # nodes hidden by collapsing (0 when nothing collapsed)
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> dict[int, dict]:
        return dict(self.graph.nodes(data=True))

    def find(self, title: str, kind: str | None = None) -> list[int]:
        """The ids of the nodes with this title (and kind)."""
        return [n for n, a in self.graph.nodes(data=True)
                if a["title"] == title and (kind is None or a["kind"] == kind)]

    def titles(self) -> list[str]:
        return [a["title"] for _, a in sorted(self.graph.nodes(data=True))]

    def edge_titles(self) -> set[tuple[str, str]]:
        """The edges as (title, title) pairs: what a reader sees, handy in tests."""
        t = self.graph.nodes
        return {(t[u]["title"], t[v]["title"]) for u, v in self.graph.edges()}

    @property
    def kinds(self) -> list[str]:
        """The node kinds present, in :data:`NODE_KINDS` order (the legend's entries)."""
        present = {a["kind"] for _, a in self.graph.nodes(data=True)}
        return [k for k in NODE_KINDS if k in present]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()


# -- building ----------------------------------------------------------------------------------
class _Builder:
    """Adds nodes in a fixed order; ids are assigned later, from that order."""

    def __init__(self):
        import networkx as nx

        self.g = nx.MultiDiGraph()
        self.keys: dict[tuple, int] = {}

    def node(self, key: tuple, **attrs) -> int:
        if key in self.keys:
            return self.keys[key]
        n = len(self.keys)
        self.keys[key] = n
        base = dict(kind="op", title="", detail="", shape=None, data=None, grad=None, source=None,
                    module=None, ref=key, note="", count=1, options="")
        base.update(attrs)
        self.g.add_node(n, **base)
        return n

    def edge(self, u: int, v: int, kind: str, shape, slot: int) -> None:
        self.g.add_edge(u, v, kind=kind, shape=shape, slot=slot)


def _shape_of(step, tid: int):
    v = step.value(tid)
    if v is not None:
        return tuple(v.shape)
    info = step.tensors.get(tid)
    return tuple(info.shape) if info is not None else None


def _constants(op) -> str:
    """The non-tensor arguments of an op, as a reader would write them: ``(·, 2)``."""
    def show(a) -> str | None:
        if isinstance(a, dict) and set(a) == {"tensor"}:
            return "·"
        if isinstance(a, float):
            return f"{a:g}"
        if isinstance(a, (list, tuple)):
            parts = [show(x) for x in a]
            return "[" + ", ".join(p if p is not None else "?" for p in parts) + "]"
        if a is None or isinstance(a, (bool, int, str)):
            return repr(a)
        return None

    args = [show(a) for a in op.args]
    if all(a == "·" for a in args):
        return ""  # keyword options (reduction='mean'...) go to the tooltip, not the slide
    symbol = _OPERATORS.get(op.name)
    if symbol and len(args) == 2 and None not in args:
        return f"{args[0]} {symbol} {args[1]}"
    return op.name + "(" + ", ".join(a if a is not None else "?" for a in args) + ")"


def _options(op) -> str:
    """The keyword options of an op call, for its tooltip: ``reduction='mean'``."""
    parts = []
    for k, v in sorted(op.kwargs.items()):
        if v is None:
            continue
        if isinstance(v, dict) and set(v) == {"tensor"}:
            parts.append(f"{k}=<tensor>")
        else:
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


#: Ops shown as an operator with their constant argument (``· ** 2``), as the code says it.
_OPERATORS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "rsub": "-",
              "true_divide": "/", "matmul": "@", "mm": "@", "remainder": "%",
              "floor_divide": "//"}


def _param_module(name: str | None, modules: list[str]) -> str | None:
    """The module a parameter belongs to, from its name (``net.0.weight`` -> ``net.0``)."""
    if not name:
        return None
    best = None
    for m in modules:
        if name.startswith(m + ".") and (best is None or len(m) > len(best)):
            best = m
    return best


def _leaf_attrs(step, tid: int, modules: list[str], with_grad, grads: dict) -> dict:
    info = step.tensors.get(tid)
    role = info.role if info is not None else "input"
    kind = "param" if role == "param" or (info is not None and info.requires_grad) else "input"
    name = step.name(tid)
    attrs = dict(kind=kind, title=name, shape=_shape_of(step, tid), data=step.value(tid),
                 module=_param_module(info.name if info else None, modules) if kind == "param" else None,
                 ref=("tensor", tid))
    if kind == "input" and role == "activation":
        attrs["note"] = "computed before this step"
    if with_grad and kind == "param":
        attrs["grad"], attrs["note"] = grads.get(tid, (None, "no gradient reached it"))
    return attrs


def _leaf_grads(step) -> dict[int, tuple]:
    """tid -> (gradient that reached the leaf in this step's backward, note)."""
    out: dict[int, tuple] = {}
    bw = step.backward
    if bw is None:
        return out
    for tid, g in zip(bw.inputs, bw.results):
        out[tid] = (g, "returned by torch.autograd.grad; .grad is left as it was")
    for n in bw.nodes:
        if n.variable is not None and n.grad_outputs and n.grad_outputs[0] is not None:
            out[n.variable] = (n.grad_outputs[0], "")
    for e in step.accumulations:
        g, note = out.get(e.tensor, (None, ""))
        if g is None:
            g = e.incoming
        if e.fresh is False:
            note = "added to the .grad already there (backward accumulates)"
        out[e.tensor] = (g, note)
    return out


#: Ops whose output shares its first input's memory: an op in place on it writes that input.
_VIEWS = frozenset({
    "narrow", "getitem", "select", "view", "view_as", "t", "T", "mT", "transpose", "permute",
    "diagonal", "squeeze", "unsqueeze", "expand", "expand_as", "unflatten", "movedim",
    "moveaxis", "swapaxes", "swapdims", "split", "chunk", "unbind", "real", "imag",
    "split_with_sizes", "tensor_split", "unfold", "as_strided"})


def _forward(step, b: _Builder, with_grad: bool) -> dict[int, int]:
    """Leaves, ops and loss nodes; returns op index -> node id."""
    ops = [o for o in step.ops if o.parent is None]
    modules = sorted({o.module for o in ops if o.module})
    producer: dict[int, tuple[int, int]] = {}  # tid -> (op index, output position)
    view_of: dict[int, int] = {}                # tid of a view -> the tensor it views
    grad_of: dict[int, Any] = {}                # tid -> gradient w.r.t. that tensor
    grad_fn_node: dict[int, Any] = {}           # op index -> GradNode
    bw = step.backward
    roots = set(bw.roots) if bw is not None else set()
    if with_grad and bw is not None:
        for n in bw.nodes:
            if n.op is not None:
                grad_fn_node.setdefault(n.op, n)
    grads = _leaf_grads(step) if with_grad else {}
    op_nodes: dict[int, int] = {}
    for op in ops:
        ins = []
        for slot, tid in enumerate(op.inputs):
            if tid in producer:
                ins.append((op_nodes[producer[tid][0]], tid, slot))
            else:
                ins.append((b.node(("tensor", tid), **_leaf_attrs(step, tid, modules, with_grad, grads)),
                            tid, slot))
        out = op.outputs[0] if op.outputs else None
        # an in-place op (relu_) gives its output the input's tid; the trace keeps one value
        # per tid (the first), which is not this op's result
        in_place = out is not None and out in op.inputs
        detail = _constants(op)
        if op.is_function:
            detail = "custom autograd.Function" + (f" {detail}" if detail else "")
        attrs = dict(kind="op" if op.is_graph else "prep", title=op.name, detail=detail,
                     shape=_shape_of(step, out) if out is not None else None,
                     data=step.value(out) if out is not None and not in_place else None,
                     source=op.source, module=op.module, ref=("op", op.index))
        if out is not None and step.tensors.get(out) is not None and step.tensors[out].name:
            attrs["title"] = f"{op.name} → {step.tensors[out].name}"
        if _options(op):
            attrs["options"] = _options(op)
        if in_place:
            attrs["detail"] = (detail + " " if detail else "") + "in place (value not kept apart)"
        gn = grad_fn_node.get(op.index)
        if with_grad and op.is_graph:
            if gn is not None:
                attrs["grad"] = gn.grad_outputs[0] if gn.grad_outputs else None
                attrs["note"] = f"backward: {gn.name}"
            else:
                attrs["note"] = "no gradient flowed back through it"
        if out in roots:
            attrs["data"] = attrs["grad"] = None  # the loss node right below shows them
        n = b.node(("op", op.index), **attrs)
        op_nodes[op.index] = n
        for u, tid, slot in ins:
            b.edge(u, n, "data", _shape_of(step, tid), slot)
        for pos, tid in enumerate(op.outputs):
            producer[tid] = (op.index, pos)  # later readers see the latest version (in place)
        if op.name in _VIEWS and op.inputs and op.is_graph:
            for tid in op.outputs:
                view_of[tid] = view_of.get(op.inputs[0], op.inputs[0])
        elif in_place and out in view_of and view_of[out] in producer:
            # h.narrow(1, 3, 3).mul_(2) writes h: h's later readers read what mul_ wrote
            producer[view_of[out]] = (op.index, 0)
            if gn is not None and pos < len(gn.grad_outputs):
                grad_of[tid] = gn.grad_outputs[pos]
    if bw is not None:
        for k, tid in enumerate(bw.roots):
            if tid not in producer:
                continue
            root_grad = None
            rn = grad_fn_node.get(producer[tid][0]) if with_grad else None
            if rn is not None and producer[tid][1] < len(rn.grad_outputs):
                root_grad = rn.grad_outputs[producer[tid][1]]
            n = b.node(("loss", tid), kind="loss", title=step.tensors[tid].name if step.tensors.get(tid)
                       and step.tensors[tid].name else "loss", shape=_shape_of(step, tid),
                       data=bw.root_value if k == 0 and bw.root_value is not None else step.value(tid),
                       grad=root_grad if with_grad else None, source=bw.source,
                       note=f"{bw.api}() called here")
            b.edge(op_nodes[producer[tid][0]], n, "data", _shape_of(step, tid), 0)
    return op_nodes


def _accumulate_attrs(step, node, grads) -> dict:
    tid = node.variable
    name = step.name(tid) if tid is not None else "?"
    g = node.grad_outputs[0] if node.grad_outputs else None
    _, note = grads.get(tid, (None, ""))
    if node.order is None:
        note = f"did not run: {name}.grad was not written" + (
            " (torch.autograd.grad returns the gradient instead)" if step.backward.api == "autograd.grad" else "")
    detail = f"→ {name}.grad"
    synced = next((e for e in step.events if e.kind == "allreduce" and e.tensor == tid), None)
    if synced is not None:  # DistributedDataParallel: the mean over the ranks lands in .grad
        bucket = step.bucket_of(tid)
        where = f", {bucket.label}" if bucket is not None else ""
        detail = f"→ all-reduce{where} → {name}.grad"
        note = (note + "; " if note else "") + f"{synced.idiom}{where} (DDP), then into {name}.grad"
    return dict(kind="accumulate", title="AccumulateGrad", detail=detail,
                shape=tuple(g.shape) if g is not None else _shape_of(step, tid) if tid is not None else None,
                grad=g, ref=("node", node.nid), note=note or f"adds the gradient into {name}.grad")


def _both(step, b: _Builder) -> None:
    op_nodes = _forward(step, b, with_grad=True)
    bw = step.backward
    grads = _leaf_grads(step)
    modules = sorted({o.module for o in step.ops if o.module})
    leaf_node = {key[1]: n for key, n in b.keys.items() if key[0] == "tensor"}
    # Which op's backward feeds each AccumulateGrad: follow grad_fn nodes that have no
    # forward op of their own (TBackward0 inside nn.Linear) back to one that has.
    fed_by: dict[int, list[int]] = {}
    for n in bw.nodes:                     # nids are topological from the root
        for nxt in n.next:
            if nxt is None:
                continue
            srcs = [n.op] if n.op is not None else fed_by.get(n.nid, [])
            have = fed_by.setdefault(nxt, [])
            have.extend(s for s in srcs if s not in have)
    for n in bw.nodes:
        if n.name != "AccumulateGrad" or n.variable is None:
            continue
        attrs = _accumulate_attrs(step, n, grads)
        info = step.tensors.get(n.variable)
        attrs["module"] = _param_module(info.name if info else None, modules)
        acc = b.node(("node", n.nid), **attrs)
        shape = attrs["shape"]
        for src in fed_by.get(n.nid, []):
            if src in op_nodes:
                b.edge(op_nodes[src], acc, "grad", shape, 0)
        if n.variable in leaf_node:
            b.edge(acc, leaf_node[n.variable], "grad", shape, 0)


def _backward(step, b: _Builder) -> None:
    bw = step.backward
    grads = _leaf_grads(step)
    ops = {o.index: o for o in step.ops}
    modules = sorted({o.module for o in step.ops if o.module})
    for k, tid in enumerate(bw.roots):
        b.node(("loss", tid), kind="loss", title=step.tensors[tid].name if step.tensors.get(tid)
               and step.tensors[tid].name else "loss", shape=_shape_of(step, tid),
               data=bw.root_value if k == 0 and bw.root_value is not None else step.value(tid),
               grad=bw.nodes[0].grad_outputs[0] if k == 0 and bw.nodes and bw.nodes[0].grad_outputs else None,
               source=bw.source, note=f"{bw.api}() called here")
    # grad_fn nodes with no forward op of their own (TBackward0 inside nn.Linear) belong to
    # the op whose backward reached them first.
    owner: dict[int, int] = {}
    for n in bw.nodes:
        if n.op is not None:
            owner[n.nid] = n.op
        for nxt in n.next:
            if nxt is not None and n.nid in owner:
                owner.setdefault(nxt, owner[n.nid])
    # Insertion order (which sets the ids, topological order permitting): layer by layer from
    # the loss back, each AccumulateGrad followed by its parameter, so that one layer's
    # nodes are neighbours and repeated layers can be recognised.
    last = len(step.ops)
    for n in sorted(bw.nodes, key=lambda n: (-owner.get(n.nid, last), n.nid)):
        if n.name == "AccumulateGrad":
            attrs = _accumulate_attrs(step, n, grads)
            info = step.tensors.get(n.variable) if n.variable is not None else None
            attrs["module"] = _param_module(info.name if info else None, modules)
            b.node(("node", n.nid), **attrs)
            if n.variable is not None:
                b.node(("tensor", n.variable), **_leaf_attrs(step, n.variable, modules, True, grads))
            continue
        else:
            op = ops.get(owner[n.nid]) if n.nid in owner else None
            own = op is not None and n.op == op.index
            g = n.grad_outputs[0] if n.grad_outputs else None
            attrs = dict(kind="grad_fn", title=n.name,
                         detail=(f"of {op.name}" if own else f"inside {op.name}") if op else "",
                         shape=tuple(g.shape) if g is not None else None, grad=g,
                         source=op.source if op else None, module=op.module if op else None,
                         note="" if n.order is not None else "did not run")
        b.node(("node", n.nid), **attrs)
    for k, tid in enumerate(bw.roots):
        if k == 0 and bw.nodes:
            g = bw.nodes[0].grad_outputs[0] if bw.nodes[0].grad_outputs else None
            b.edge(b.keys[("loss", tid)], b.keys[("node", 0)], "grad",
                   tuple(g.shape) if g is not None else _shape_of(step, tid), 0)
    for n in bw.nodes:
        for slot, nxt in enumerate(n.next):
            if nxt is None:
                continue
            g = n.grad_inputs[slot] if slot < len(n.grad_inputs) else None
            b.edge(b.keys[("node", n.nid)], b.keys[("node", nxt)], "grad",
                   tuple(g.shape) if g is not None else None, slot)
    for n in bw.nodes:
        if n.name == "AccumulateGrad" and n.variable is not None:
            g = n.grad_outputs[0] if n.grad_outputs else None
            b.edge(b.keys[("node", n.nid)], b.keys[("tensor", n.variable)], "grad",
                   tuple(g.shape) if g is not None else None, 0)


def build_graph(step, view: str = "both", *, budget: int = BUDGET, expand: bool = False) -> GraphModel:
    """The graph of ``step`` in ``view`` (one of :data:`VIEWS`), collapsed above ``budget``
    nodes unless ``expand``. How it is drawn is the render layer's business
    (``gradtrace.render.graph.GraphOptions``)."""
    if view not in VIEWS:
        raise UsageError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")
    if not isinstance(budget, int) or budget < 0:
        raise UsageError(f"budget must be a whole number, 0 or more, not {budget!r}")
    if view != "forward" and step.backward is None:
        raise UsageError(f"step {step.index} has no backward pass, so there is no gradient to "
                         "draw; use view 'forward' (--view forward)")
    b = _Builder()
    if view == "forward":
        _forward(step, b, with_grad=False)
    elif view == "both":
        _both(step, b)
    else:
        _backward(step, b)
    g = _renumber(b.g)
    model = GraphModel(graph=g, view=view, step=step.index, loss=step.loss)
    if step.ops_dropped:
        model.notes.append(f"{step.ops_dropped} ops of this step were not recorded "
                           "(max_ops_per_step)")
    if not expand and len(model) > budget:
        _collapse(model, budget)
    return model


def _renumber(g):
    """Relabel nodes 0..n-1 in topological order, ties broken by the old (insertion) id.
    Where data edges exist they alone set the order: in the ``both`` view the gradient
    edges run against them."""
    import networkx as nx

    data = [(u, v) for u, v, a in g.edges(data=True) if a["kind"] == "data"]
    skeleton = nx.DiGraph()
    skeleton.add_nodes_from(g.nodes)
    skeleton.add_edges_from(data if data else g.edges())
    order = list(nx.lexicographical_topological_sort(skeleton, key=lambda n: n))
    mapping = {old: new for new, old in enumerate(order)}
    h = nx.MultiDiGraph()
    for old in order:
        h.add_node(mapping[old], **g.nodes[old])
    for u, v, a in sorted(g.edges(data=True), key=lambda e: (mapping[e[0]], mapping[e[1]], e[2]["slot"])):
        h.add_edge(mapping[u], mapping[v], **a)
    return h


# -- ranking --------------------------------------------------------------------------------------
def layers(model: GraphModel, nodes=None) -> list[list[int]]:
    """The graph's layers (ranks), in order, each a list of node ids in id order: the one
    ranking of a graph that the DOT text, the matplotlib drawing and, without graphviz,
    the explorer's layout (the backprop explainer's picture too) all use. ``nodes``: rank only the sub-graph of these nodes.

    Ranks follow the edges that set them: data edges, and in the ``both`` view not the
    gradient edges (drawn against the data's flow, with ``constraint=false``); in the
    backward view, which has only gradient edges, all of them. Each node starts at its
    longest path from a source; then a source (a parameter, an input) or a node that feeds
    more than it reads moves up to just before its first consumer (shorter edges, as
    graphviz's network simplex prefers). In the ``both`` view each AccumulateGrad stands
    level with its parameter. Self-loops (an op recorded as its own input) are ignored."""
    import networkx as nx

    g = model.graph if nodes is None else model.graph.subgraph(nodes)
    free = model.view == "both"
    skeleton = nx.DiGraph()
    skeleton.add_nodes_from(sorted(g.nodes))
    skeleton.add_edges_from(sorted((u, v) for u, v, a in g.edges(data=True)
                                   if u != v and not (free and a["kind"] == "grad")))
    rank: dict[int, int] = {}
    for depth, layer in enumerate(nx.topological_generations(skeleton)):
        for n in layer:
            rank[n] = depth
    for n in reversed(list(nx.topological_sort(skeleton))):
        succ, pred = list(skeleton.successors(n)), list(skeleton.predecessors(n))
        if succ and len(succ) >= len(pred):
            rank[n] = min(rank[s] for s in succ) - 1
    if free:
        for n, a in g.nodes(data=True):
            if a["kind"] == "accumulate":
                params = [v for v in g.successors(n) if g.nodes[v]["kind"] == "param"]
                if params:
                    rank[n] = rank[params[0]]
    used = sorted(set(rank.values()))
    out: list[list[int]] = [[] for _ in used]
    index = {r: i for i, r in enumerate(used)}
    for n in sorted(rank):
        out[index[rank[n]]].append(n)
    return out


# -- collapsing large graphs -------------------------------------------------------------------
def _merge(g, members: list[int], attrs: dict) -> None:
    """Replace ``members`` by one node (id = the smallest member) with ``attrs``; edges
    into and out of the group are kept (once per neighbour), inner edges dropped."""
    keep = min(members)
    group = set(members)
    ins: dict[tuple, dict] = {}
    outs: dict[tuple, dict] = {}
    for u, v, a in g.edges(data=True):
        if u in group and v not in group:
            outs.setdefault((v, a["kind"]), dict(a))
        elif v in group and u not in group:
            ins.setdefault((u, a["kind"]), dict(a))
    # what the new node stands for: the refs of every node merged into it, nested groups
    # included, so that a picture of the collapsed graph can find where a tensor went
    refs: set = set()
    for m in members:
        refs.add(g.nodes[m]["ref"])
        refs.update(g.nodes[m].get("members", ()))
    attrs = {**attrs, "members": tuple(sorted(refs, key=repr))}
    for m in members:
        g.remove_node(m)
    g.add_node(keep, **attrs)
    for u, kind in sorted(ins):
        g.add_edge(u, keep, **ins[(u, kind)])
    for v, kind in sorted(outs):
        g.add_edge(keep, v, **outs[(v, kind)])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _attachments(g, group: set[int]) -> set[int]:
    """Parameters and AccumulateGrad nodes that only touch ``group``: they fold with it."""
    import networkx as nx

    cand = [n for n in g.nodes if n not in group and g.nodes[n]["kind"] in ("param", "accumulate")]
    out: set[int] = set()
    for comp in nx.connected_components(g.subgraph(cand).to_undirected(as_view=True)):
        around = {x for n in comp for x in (*g.predecessors(n), *g.successors(n))} - comp
        if around and around <= group:
            out |= comp
    return out


def _out_value(g, members: list[int]):
    """(shape, data, grad) of the one node in ``members`` whose result leaves the group."""
    group = set(members)
    leaving = [m for m in members if any(v not in group for v in g.successors(m))]
    if len(leaving) == 1:
        a = g.nodes[leaving[0]]
        return a["shape"], a["data"], a["grad"]
    return None, None, None


_DIGITS = re.compile(r"\d+")
#: Nodes that fold along with the sub-graph they hang off, never on their own.
_LEAFLIKE = ("param", "input", "accumulate", "loss")


def _module_depth(module: str | None) -> int:
    return 0 if not module else module.count(".") + 1


def _collapse_modules(g, depth: int, around_repeats: bool = True) -> int:
    """Fold every call of a module at ``depth`` (its sub-modules included) into one node.
    A call is a run of consecutive nodes (in id order) under the same module prefix; a
    parameter joins the call when the call is its only consumer, and the box counts it.
    Unless ``around_repeats``, a call that holds a "× N" fold is left alone (that fold
    keeps its parameters drawn). Returns nodes removed."""
    def prefix(m):
        if not m or _module_depth(m) < depth:
            return None
        return ".".join(m.split(".")[:depth])

    order = sorted(g.nodes)
    pos = {n: i for i, n in enumerate(order)}
    runs: list[tuple[str, list[int]]] = []
    for n in order:
        a = g.nodes[n]
        if a["kind"] in _LEAFLIKE:
            continue
        p = prefix(a["module"])
        if p is None:
            continue
        if runs and runs[-1][0] == p and _contiguous(g, runs[-1][1], n, order, pos):
            runs[-1][1].append(n)
        else:
            runs.append((p, [n]))
    removed = 0
    for p, members in runs:
        group = set(members)
        extra = _attachments(g, group)
        members = sorted(group | extra)
        if len(members) < 2:
            continue
        n_ops = sum(g.nodes[m]["count"] for m in group)
        if not around_repeats and any(g.nodes[m]["kind"] == "repeat" for m in group):
            continue  # its repeats are folded already, and their parameters stay drawn
        n_params = sum(1 for m in extra if g.nodes[m]["kind"] == "param")
        shape, data, grad = _out_value(g, sorted(group))
        parts = [_plural(n_ops, "op")] + ([_plural(n_params, "param")] if n_params else [])
        src = next((g.nodes[m]["source"] for m in members if g.nodes[m]["source"] is not None), None)
        parent = ".".join(p.split(".")[:-1]) or None
        _merge(g, members, dict(kind="module", title=p, detail=", ".join(parts), shape=shape,
                                data=data, grad=grad, source=src, module=parent,
                                ref=("group", p), note="collapsed module call; expand to see inside",
                                count=n_ops, options=""))
        removed += len(members) - 1
    return removed


def _contiguous(g, run: list[int], n: int, order: list[int], pos: dict[int, int]) -> bool:
    """True when only leaves lie between the run's last node and ``n``."""
    i, j = pos[run[-1]], pos[n]
    return all(g.nodes[m]["kind"] in _LEAFLIKE for m in order[i + 1:j])


def _signature(g, n: int) -> tuple:
    a = g.nodes[n]
    return (a["kind"], _DIGITS.sub("#", a["title"]), _DIGITS.sub("#", a["module"] or ""),
            a["shape"], tuple(sorted(str(e["shape"]) for _, _, e in g.in_edges(n, data=True))))


def _collapse_repeats(g, min_repeats: int = 3, max_period: int = 16, budget: int | None = None) -> int:
    """Fold the middle of the longest run of a repeated sub-graph (same signature sequence,
    period p, r >= min_repeats times in a row) into one "× k" node. Its parameters stay
    drawn where the picture then fits ``budget`` (always, without one). Returns nodes removed."""
    order = [n for n in sorted(g.nodes) if g.nodes[n]["kind"] not in _LEAFLIKE]
    sig = [_signature(g, n) for n in order]
    best = None
    for p in range(1, max_period + 1):
        i = 0
        while i + 2 * p <= len(sig):
            r = 1
            while sig[i + r * p:i + (r + 1) * p] == sig[i:i + p] and i + (r + 1) * p <= len(sig):
                r += 1
            if r >= min_repeats and (best is None or (r - 2) * p > (best[2] - 2) * best[1]):
                best = (i, p, r)
            i += max(1, (r - 1) * p) if r > 1 else 1
    if best is None:
        return 0
    i, p, r = best
    group = set(order[i + p:i + (r - 1) * p])
    leaves = _attachments(g, group)
    members = sorted(group)
    if len(members) < 2:
        return 0
    # The folded repetitions' parameters and AccumulateGrad nodes stay drawn (one node per
    # leaf of the block), unless the picture would not fit the budget even so: then the
    # fold holds them and says how many. A graph a little over its budget keeps every leaf.
    kept = len({_leaf_key(g, n) for n in leaves})
    swallow = budget is not None and \
        g.number_of_nodes() - (len(group) - 1) - (len(leaves) - kept) > budget
    n_params = sum(1 for m in leaves if g.nodes[m]["kind"] == "param")
    if swallow:
        members = sorted(group | leaves)
    block = [g.nodes[n] for n in order[i:i + p]]
    steps = " → ".join(a["title"] for a in block)
    mods = [g.nodes[m]["module"] for m in group]
    common = _common_module(mods) if all(mods) else None
    shape, data, grad = _out_value(g, sorted(group))
    n_ops = sum(g.nodes[m]["count"] for m in group)
    src = next((g.nodes[m]["source"] for m in members if g.nodes[m]["source"] is not None), None)
    held = f", {_plural(n_params, 'param')}" if swallow and n_params else ""
    _merge(g, members, dict(kind="repeat", title=f"× {r - 2} more", detail=steps, shape=shape,
                            data=data, grad=grad, source=src, module=common,
                            ref=("group", f"repeat{order[i + p]}"),
                            note=f"{r - 2} more repetitions of the block before ({_plural(n_ops, 'op')}"
                                 f"{held}); expand to see them", count=n_ops, options=""))
    return len(members) - 1 + (0 if swallow else _fold_leaves(g, leaves, r - 2))


def _leaf_key(g, n: int) -> tuple:
    """What the same leaf of two repetitions has in common: kind, name and detail but for
    their numbers, shape."""
    a = g.nodes[n]
    return (a["kind"], _DIGITS.sub("#", a["title"]), _DIGITS.sub("#", a["detail"]), a["shape"])


def _fold_leaves(g, leaves: set[int], repeats: int) -> int:
    """The parameters (and AccumulateGrad nodes) of folded repetitions stay drawn: a
    picture may fold repeats, never drop a leaf. The same leaf of each repetition (same
    kind and shape, same name but for its numbers) becomes one node that names the first
    and the last; a leaf of one repetition stays as it is. Returns nodes removed."""
    groups: dict[tuple, list[int]] = {}
    for n in sorted(leaves):
        groups.setdefault(_leaf_key(g, n), []).append(n)
    removed = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        first, last = g.nodes[members[0]], g.nodes[members[-1]]
        attrs = dict(first)
        what = "AccumulateGrad nodes" if first["kind"] == "accumulate" else "parameters"
        if first["kind"] == "accumulate":
            attrs["detail"] = f"{first['detail']} … {last['detail'].removeprefix('→ ')}"
        else:
            attrs["title"] = f"{first['title']} … {last['title']}"
        attrs.update(data=None, grad=None, source=None, ref=("group", f"leaves{members[0]}"),
                     count=sum(g.nodes[m]["count"] for m in members),
                     note=f"{len(members)} {what}, one per repetition in the {repeats} folded; "
                          "expand to see each")
        _merge(g, members, attrs)
        removed += len(members) - 1
    return removed


def _common_module(mods: list[str]) -> str | None:
    parts = [m.split(".") for m in mods]
    out = []
    for xs in zip(*parts):
        if len(set(xs)) != 1:
            break
        out.append(xs[0])
    # the repeats are siblings (layers.1, layers.2): their parent is the common part
    return ".".join(out) or None


def _collapse(model: GraphModel, budget: int) -> None:
    g = model.graph
    before = g.number_of_nodes()
    deepest = max((_module_depth(a["module"]) for _, a in g.nodes(data=True)), default=0)
    # first module calls around no "× N" fold, deepest first; only if that is not enough,
    # the calls around one too (their boxes then count the parameters they hold)
    for around_repeats in (False, True):
        depth = deepest
        while g.number_of_nodes() > budget:
            while g.number_of_nodes() > budget and _collapse_repeats(g, budget=budget):
                pass
            if g.number_of_nodes() <= budget or depth < 1:
                break
            _collapse_modules(g, depth, around_repeats)
            depth -= 1
    model.graph = _renumber(g)
    model.collapsed = before - model.graph.number_of_nodes()
    if model.collapsed:
        model.notes.append(f"{before} nodes collapsed to {model.graph.number_of_nodes()} "
                           "(budget {}); expand to see every node".format(budget))
