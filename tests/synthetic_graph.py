"""Graph models and values built by hand, for the render tests that need no recording: the
node and edge attributes :class:`gradtrace.analysis.graph.GraphModel` documents."""

from __future__ import annotations

import networkx as nx
import numpy as np

from gradtrace.analysis.graph import GraphModel
from gradtrace.tracefile.model import Source, Stats, Value


def value(numbers, dtype: str = "float32", shape=None) -> Value:
    """A kept value holding ``numbers`` (reshaped to ``shape``)."""
    a = np.asarray(numbers, dtype=dtype)
    if shape is not None:
        a = a.reshape(shape)
    return Value(0, tuple(a.shape), dtype, array=a)


def stats_only(shape: tuple[int, ...], stats: Stats, dtype: str = "float32") -> Value:
    """A value of which only the statistics were recorded."""
    return Value(0, shape, dtype, stored_stats=stats)


def node(kind: str = "op", title: str = "", **attrs) -> dict:
    """A node's attributes: the builder's defaults, then ``attrs``."""
    base = dict(kind=kind, title=title, detail="", shape=None, data=None, grad=None, source=None,
                module=None, ref=("op", 0), note="", count=1, options="")
    base.update(attrs)
    return base


def model(nodes: list[dict], edges=(), view: str = "both", step: int = 0,
          loss: float | None = None) -> GraphModel:
    """A model of ``nodes`` (ids 0..n-1 in list order) and ``edges`` (u, v, kind[, shape])."""
    g = nx.MultiDiGraph()
    for n, attrs in enumerate(nodes):
        g.add_node(n, **attrs)
    for slot, e in enumerate(edges):
        u, v, kind = e[:3]
        g.add_edge(u, v, kind=kind, shape=e[3] if len(e) > 3 else None, slot=slot)
    return GraphModel(graph=g, view=view, step=step, loss=loss)


def chain(n: int, view: str = "backward", module: str | None = None) -> GraphModel:
    """A chain of ``n`` small grad_fn nodes, each feeding the next (a long backward pass)."""
    nodes = [node("loss", "loss")] + [node("grad_fn", f"B{i}", module=module) for i in range(1, n)]
    return model(nodes, [(i, i + 1, "grad", (1,)) for i in range(n - 1)], view=view)


def linear_step(view: str = "both") -> GraphModel:
    """``loss = sum(X @ w)`` drawn in ``view``: X, w, matmul, sum, loss (and w's
    AccumulateGrad in the both view), with values and gradients."""
    src = Source("train.py", 3, "loss = (X @ w).sum()")
    X = value([[1.0, 2.0], [3.0, 4.0]])
    w = value([[0.5], [-1.0]])
    mm = value([[-1.5], [-2.5]])
    ones = value([[1.0], [1.0]])
    gw = value([[4.0], [6.0]])
    nodes = [node("input", "X", shape=(2, 2), data=X, ref=("tensor", 1)),
             node("param", "w", shape=(2, 1), data=w, grad=gw if view != "forward" else None,
                  ref=("tensor", 2)),
             node("op", "matmul", shape=(2, 1), data=mm, grad=ones if view != "forward" else None,
                  source=src, note="backward: MmBackward0", ref=("op", 0)),
             node("op", "sum", shape=(), data=value(-4.0), source=src, ref=("op", 1)),
             node("loss", "loss", shape=(), data=value(-4.0), grad=value(1.0), ref=("loss", 3))]
    edges = [(0, 2, "data", (2, 2)), (1, 2, "data", (2, 1)), (2, 3, "data", (2, 1)),
             (3, 4, "data", ())]
    if view == "both":
        nodes.append(node("accumulate", "AccumulateGrad", detail="→ w.grad", shape=(2, 1),
                          grad=gw, ref=("node", 5)))
        edges += [(2, 5, "grad", (2, 1)), (5, 1, "grad", (2, 1))]
    return model(nodes, edges, view=view, loss=-4.0)
