"""The backward pass as recorded: every .grad accumulation carries its kind, seen at record time."""

from __future__ import annotations

import pytest
import torch

import gradtrace
from gradtrace.tracefile.model import ACCUMULATIONS
from planted import run_with

#: The accumulation kinds a demo's steps show, per parameter: (first step, the later ones).
EXPECTED = {"linreg": ("fresh", "zeros"), "forgot_zero_grad": ("fresh", "added"),
            "linreg_concise": ("fresh", "fresh")}  # zero_grad() sets .grad to None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_accumulation_in_a_demo_carries_its_kind(recorded_demos, name):
    t = recorded_demos.trace(name)
    first, later = EXPECTED[name]
    accs = [(s.index, e) for s in t.steps for e in s.accumulations]
    assert accs
    for index, e in accs:
        assert e.accumulation in ACCUMULATIONS
        assert e.accumulation == (first if index == 0 else later), (index, t.name(e.tensor))
        assert e.fresh == (e.accumulation == "fresh")
        assert e.idiom == {"fresh": "fresh", "zeros": "added onto zeros", "added": "added"}[e.accumulation]
    for row, s in zip(t.step_rows(), t.steps):  # the summary counts agree with the events
        kinds = [e.accumulation for e in s.accumulations]
        assert row["accumulate_fresh"] == kinds.count("fresh")
        assert row["accumulate_added"] == kinds.count("zeros") + kinds.count("added")
        assert row["accumulate_on_top"] == kinds.count("added")
    assert all(e.accumulation is None for s in t.steps for e in s.events if e.kind != "accumulate")


def test_walk_takes_at_most_limit_new_nodes_depth_first():
    from gradtrace.record.backward import walk

    a = torch.tensor(0.5, requires_grad=True)
    h = torch.tensor(1.0)
    for _ in range(50):
        h = h * 0.5 + a
    nodes, names, nexts, left_out = walk([h.grad_fn])
    assert left_out == 0 and len(nodes) == 100  # 50 adds, 49 muls (the first h has none), a
    nodes, names, nexts, left_out = walk([h.grad_fn], limit=10)
    assert len(nodes) == 10 and left_out > 0
    assert nodes[0] is h.grad_fn  # from the root
    # edges to nodes left out are None; the others point inside the list
    assert all(n is None or 0 <= n < 10 for row in nexts for n in row)
    # nodes Python holds already do not count
    known = {id(n) for n in nodes}
    more = walk([h.grad_fn], limit=10, known=known)
    assert len(more[0]) == 20


def test_a_pass_beyond_max_nodes_per_backward_is_truncated_and_said(capsys):
    a = torch.tensor(0.5, requires_grad=True)
    with gradtrace.trace(max_nodes_per_backward=30, max_ops_per_step=10) as t:
        h = torch.tensor(1.0)
        for _ in range(40):
            h = h * 0.9 + a
        h.backward()
    assert a.grad is not None  # the user's gradients are whole
    s = t.steps[0]
    # the nodes held from Python: the recorded forward ops' and the walk's new ones
    new = [n for n in s.backward.nodes if n.op is None]
    assert 0 < len(new) and len(new) + len(s.graph_ops) <= 30
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "max_nodes_per_backward" in x]
    assert len(lines) == 1 and lines[0].startswith("gradtrace: 1 backward pass reached")
    # the trace says the pass was cut short (format 4), and by how many nodes
    assert s.backward.truncated and s.backward.left_out > 0
    with gradtrace.trace() as whole:
        (a * 2).backward()
    assert not whole.steps[0].backward.truncated and whole.steps[0].backward.left_out == 0


# -- a bug of gradtrace's never reaches the script; the script's own errors do -----------------
@pytest.mark.parametrize("where", ["write", "__enter__", "_prepare", "watch"])
def test_a_bug_around_a_backward_pass_runs_it_once_and_goes_on(monkeypatch, capfd, tmp_path, where):
    from gradtrace.record.backward import Backward, BackwardPass
    from gradtrace.record.scalars import ScalarTaker
    owner = {"write": BackwardPass, "__enter__": BackwardPass, "_prepare": Backward,
             "watch": ScalarTaker}[where]
    t = run_with(monkeypatch, capfd, owner, where, tmp_path)
    assert len(t.scalars()) == 4 and len(t.steps) == 4  # the steps end at each backward pass
    assert all(s.ops for s in t.steps)  # the forward ops are recorded all the same


def test_a_backward_passs_own_error_reaches_the_script_once():
    w = torch.ones(3, requires_grad=True)
    with gradtrace.trace() as t:
        loss = (w * w).sum()
        loss.backward()
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]
    assert t.steps[0].backward is not None


def test_a_batched_backward_pass_runs_unrecorded_and_is_said(capsys):
    """hessian(..., vectorize=True) runs a backward pass under vmap: its tensors are batched
    and have no values to take (it was 'internal error: Batching rule not implemented for
    aten::detach')."""
    from torch.autograd.functional import hessian

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(2, 3)
    with gradtrace.trace() as t:
        H = hessian(lambda inp: (model(inp) ** 2).sum(), x, vectorize=True)
    plain = hessian(lambda inp: (model(inp) ** 2).sum(), x, vectorize=True)
    assert torch.equal(H, plain)
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert "backward pass ran batched under vmap" in err or "passes ran batched under vmap" in err
    assert t.result.info.unrecorded["batched_backward"] >= 1
