"""The graph model's collapsing: a picture may fold repeats, never drop a leaf."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.analysis.graph import build_graph


def _step(layers: int):
    """``layers`` repetitions of Linear + Tanh (two ops each: a repeat fold saves a node)."""
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(8, 8), nn.Tanh())])
    with gradtrace.trace() as t:
        (model(torch.randn(4, 8)) ** 2).mean().backward()
    names = [f"{2 * i}.{p}" for i in range(layers) for p in ("weight", "bias")]
    return t.result.steps[0], names


def _leaves(m):
    params = {a["title"]: a for _, a in m.graph.nodes(data=True) if a["kind"] == "param"}
    accs = {a["detail"]: a for _, a in m.graph.nodes(data=True) if a["kind"] == "accumulate"}
    return params, accs


@pytest.mark.parametrize("view", ["forward", "backward", "both"])
def test_one_node_over_the_budget_folds_a_repeat_but_keeps_every_leaf(view):
    step, names = _step(3)
    full = build_graph(step, view, expand=True)
    m = build_graph(step, view, budget=len(full) - 1)
    assert [a["title"] for _, a in m.graph.nodes(data=True) if a["kind"] == "repeat"] == ["× 1 more"]
    assert m.collapsed > 0 and len(m) < len(full)
    params, accs = _leaves(m)
    for name in names:
        (title,) = [t for t in params if t == name or t.endswith("." + name)]
        assert params[title]["count"] == 1
        if view != "forward":   # ...and its AccumulateGrad, with an edge to it
            (detail,) = [d for d in accs if d.endswith(f"{name}.grad")]
            acc = next(n for n, a in m.graph.nodes(data=True) if a["detail"] == detail)
            par = next(n for n, a in m.graph.nodes(data=True) if a["title"] == title)
            assert m.graph.has_edge(acc, par)


@pytest.mark.parametrize("view", ["forward", "backward", "both"])
def test_leaves_of_several_folded_repetitions_fold_together_and_are_counted(view):
    step, names = _step(6)
    full = build_graph(step, view, expand=True)
    m = build_graph(step, view, budget=len(full) - 1)
    (rep,) = [a for _, a in m.graph.nodes(data=True) if a["kind"] == "repeat"]
    folded = int(rep["title"].split()[1])
    assert folded >= 2
    params, accs = _leaves(m)
    assert sum(a["count"] for a in params.values()) == len(names)     # every parameter, counted
    assert any(" … " in t and a["count"] == folded for t, a in params.items())
    if view != "forward":
        assert sum(a["count"] for a in accs.values()) == len(names)


def test_far_over_the_budget_the_fold_holds_its_parameters_and_says_so():
    step, names = _step(12)
    m = build_graph(step, "forward", budget=14)
    (rep,) = [a for _, a in m.graph.nodes(data=True) if a["kind"] == "repeat"]
    folded = int(rep["title"].split()[1])
    params, _ = _leaves(m)
    assert f"{2 * folded} params" in rep["note"]
    assert sum(a["count"] for a in params.values()) + 2 * folded == len(names)
