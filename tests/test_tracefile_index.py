"""The step index (gradtrace/tracefile/index.py): a pass over a run's steps holds bounded memory."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.tracefile.index import StepList


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("index") / "run.gtrace"
    torch.manual_seed(0)
    w = torch.randn(64, 1, requires_grad=True)
    X = torch.randn(32, 64)
    with gradtrace.trace(path):
        for _ in range(40):
            (X @ w).pow(2).mean().backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                w.grad.zero_()
    return path


def test_a_pass_over_the_steps_keeps_only_the_cached_ones(long_trace, monkeypatch):
    monkeypatch.setattr(StepList, "CACHE_STEPS", 5)
    t = gradtrace.load(long_trace)
    alive = []
    losses = []
    for step in t.steps:  # one pass, as the check and the report make
        alive.append(weakref.ref(step))
        losses.append(step.loss)
    del step
    gc.collect()
    assert len(alive) == 40 and all(x is not None for x in losses)
    assert sum(r() is not None for r in alive) == 5  # the last five, in the cache
    assert all(r() is not None for r in alive[-5:])
    assert t.steps[39] is alive[-1]()  # a cached step is not read again


def test_the_byte_bound_counts_decoded_rows_too(long_trace, monkeypatch):
    monkeypatch.setattr(StepList, "CACHE_BYTES", 1)  # every step is over it: one is kept
    t = gradtrace.load(long_trace)
    refs = [weakref.ref(s) for s in t.steps]
    gc.collect()
    assert [r() is not None for r in refs].count(True) == 1
    step, size = t._read_step(0)
    assert size > 4 * 64 * 3  # its values (x, w, the gradient...) and its rows


def test_a_value_kept_after_its_step_holds_only_its_own_bytes(long_trace):
    t = gradtrace.load(long_trace)
    grad = t.steps[0].accumulations[0].incoming  # (64, 1) float32, kept in full
    others = [v for v in t.steps[0].values.values() if v.kept]
    assert len(others) > 1
    root = grad.array
    while isinstance(root, np.ndarray):  # the array is a view: of what memory?
        root = root.base
    assert isinstance(root, bytes)
    assert len(root) == 64 * 4  # its own bytes, not the step's blob of all its values
