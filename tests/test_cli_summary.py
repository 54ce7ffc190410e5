"""`gradtrace summary` of a run with steps not recorded in full: every step's scalars are counted."""

from __future__ import annotations

import pytest

import torch

import gradtrace
from gradtrace.cli.summary import summarize
from conftest import gradtrace_cmd


@pytest.mark.slow  # runs gradtrace or python in a child process
def test_a_run_beyond_the_budget_is_summarised_from_its_scalars(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(8, 3)
    opt = torch.optim.SGD([w], lr=0.01)
    path = tmp_path / "t.gtrace"
    with gradtrace.trace(path, budget="40KB"):
        for _ in range(400):
            opt.zero_grad()
            (X @ w).pow(2).mean().backward()
            opt.step()
    t = gradtrace.load(path)
    doc = summarize(t)
    full = len(t.steps)
    assert 0 < full < 400 and doc["totals"]["steps"] == full
    assert doc["scalars"]["steps"] == 400 and doc["scalars"]["full"] == full
    assert doc["scalars"]["accumulate_fresh"] == 400  # zero_grad() sets None every step
    assert doc["totals"]["updates"] == full  # one update per step in full, none borrowed
    r = gradtrace_cmd("summary", str(path), "--limit", "4", cwd=tmp_path)
    assert r.returncode == 0
    head = r.stdout.splitlines()[:2]
    assert f"400 steps, {full} of them recorded in full (below)" in head[0]
    assert head[1].startswith("every step: loss ") and "400 fresh" in head[1]
