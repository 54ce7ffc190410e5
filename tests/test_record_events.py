"""record/events.py: an optimizer's param groups are recorded once, at its first step."""

from __future__ import annotations

import sqlite3

import pytest
import torch

import gradtrace
from gradtrace.errors import TraceFileError
from planted import run_with


def _train(path=None):
    w = torch.zeros(3, requires_grad=True)
    frozen = torch.ones(3)                       # requires_grad=False, given to Adam by mistake
    b = torch.zeros(1, requires_grad=True)
    x = torch.linspace(-1, 1, 12).reshape(4, 3)
    opt = torch.optim.Adam([{"params": [w, frozen]}, {"params": [b], "lr": 0.5}], lr=0.1,
                           betas=(0.8, 0.9))
    with gradtrace.trace(path) as t:
        for _ in range(3):
            opt.zero_grad()
            ((x @ w + b - 1) ** 2).mean().backward()
            opt.step()
    return t.result


def test_param_groups_are_recorded_once_with_their_numbers():
    trace = _train()
    [opt] = trace.info.optimizers
    assert opt.kind == "Adam" and opt.step == 0
    assert trace.sources[opt.source].code == "opt.step()"
    g0, g1 = opt.groups
    assert [trace.name(t) for t in g0.params] == ["w", "frozen"]
    assert [trace.name(t) for t in g0.frozen] == ["frozen"]
    assert [trace.name(t) for t in g1.params] == ["b"] and g1.frozen == ()
    assert g0.hyper["lr"] == 0.1 and g1.hyper["lr"] == 0.5
    assert g0.hyper["betas"] == (0.8, 0.9) and g0.hyper["amsgrad"] is False


def test_the_frozen_tensor_is_named_by_the_check():
    report = _train().check()
    [f] = [f for f in report.findings if f.param == "frozen"]
    assert f.kind == "no_grad_received" and "does not require grad" in f.message
    assert f.step == 0 and f.source is not None


def test_a_malformed_optimizers_entry_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "t.gtrace"
    _train(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=? WHERE key='optimizers'",
                ('[{"kind": "SGD", "step": 0, "source": null, "groups": [{"params": ["x"]}]}]',))
    con.commit()
    con.close()
    with pytest.raises(TraceFileError) as e:
        gradtrace.load(path).info
    msg = str(e.value)
    assert str(path) in msg and "params" in msg and "\n" not in msg


# -- a bug of gradtrace's never reaches the script; the script's own errors do -----------------
@pytest.mark.parametrize("name", ["_plan_inplace", "_finish_inplace", "_plan_set_grad",
                                  "_finish_set_grad", "_plan_set_data", "_finish_set_data", "_alias"])
def test_a_bug_around_a_change_runs_the_call_once_and_goes_on(monkeypatch, capfd, tmp_path, name):
    from gradtrace.record.events import Events
    t = run_with(monkeypatch, capfd, Events, name, tmp_path)
    kinds = {e.kind for s in t.steps for e in s.events}
    assert "accumulate" in kinds  # the backward passes are recorded all the same


def test_a_changes_own_error_reaches_the_script_once():
    w = torch.ones(3, requires_grad=True)
    with gradtrace.trace() as t:
        (w * 2).sum().backward()
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            w -= 0.1 * w.grad  # outside no_grad
        with pytest.raises(RuntimeError, match="same size"):
            w.grad = torch.zeros(4)
        with torch.no_grad():
            w -= 0.5 * w.grad
    assert w.tolist() == [0.0, 0.0, 0.0]  # one update of the three, once
    assert [e.kind for e in t.steps[0].events] == ["accumulate", "update"]


# -- the first write of a new parameter -----------------------------------------------------------
def _init_inside(path):
    torch.manual_seed(0)
    with gradtrace.trace(path) as t:
        junk = torch.full((2 * 3 + 2,), float("nan"))  # memory the next allocations may reuse
        del junk
        net = torch.nn.Linear(3, 2)  # torch.empty, then kaiming_uniform_ and uniform_
        net.weight.data.normal_(0, 0.01)  # d2l's re-initialisation through .data
        with torch.no_grad():
            net.bias.uniform_(-1, 1)  # a parameter written before: its value before is kept
        net(torch.ones(4, 3)).sum().backward()
    return t


def test_the_first_write_of_a_new_parameter_has_no_value_before(tmp_path):
    t = _init_inside(tmp_path / "a.gtrace")
    ups = [e for e in t.steps[0].events if e.kind == "update"]
    assert [(t.name(e.tensor), e.idiom) for e in ups] == [
        ("net.weight", "p.kaiming_uniform_()"), ("net.bias", "p.uniform_()"),
        ("net.weight", "p.data.normal_()"), ("net.bias", "p.uniform_() (no_grad)")]
    first_w, first_b, again_w, again_b = ups
    assert first_w.before is None and first_b.before is None  # not what the memory held
    assert again_w.before.array.tolist() == first_w.after.array.tolist()  # kaiming's values
    assert again_b.before.array.tolist() == first_b.after.array.tolist()
    # what is recorded no longer depends on the bytes a new tensor's memory held
    other = _init_inside(tmp_path / "b.gtrace")
    steps = [sqlite3.connect(p).execute("SELECT body, vidx, vals FROM step").fetchall()
             for p in (tmp_path / "a.gtrace", tmp_path / "b.gtrace")]
    assert steps[0] == steps[1] and len(other.steps) == 1
