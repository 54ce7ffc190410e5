"""The recording policy: which steps are recorded in full within the budget, and every step's scalars."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.config import Config
from gradtrace.errors import UsageError
from gradtrace.record.policy import Policy


class _Writer:
    """What the policy reads of the writer: the bytes of the step rows written."""

    def __init__(self):
        self.step_bytes = 0


def _simulate(policy: Policy, w: _Writer, steps: int, per_step: int, events=()) -> list[int]:
    full = []
    for s in range(steps):
        if policy.decide(s):
            full.append(s)
            w.step_bytes += per_step
        if s in events:
            policy.event(s, "something")
    return full


def test_first_steps_then_spacing_that_doubles_within_the_budget():
    w = _Writer()
    p = Policy(Config(budget=100_000), w)
    full = _simulate(p, w, 20_000, 1_000)
    first = [s for s in full if s < 50]
    assert first == list(range(50))  # half the budget: 50 steps of 1,000 bytes
    spaced = full[50:]
    gaps = np.diff(spaced)
    assert spaced[0] - 49 == 16 and all(g in {16 << k for k in range(12)} for g in gaps.tolist())
    assert list(gaps) == sorted(gaps)  # ever wider
    assert len(spaced) * 1_000 <= 25_000  # a quarter of the budget
    assert w.step_bytes <= 100_000 * (Policy.FIRST + Policy.SPACED)


def test_a_parameter_too_large_to_keep_gives_the_first_steps_a_sixteenth():
    # a lesson's parameters are kept value by value: its first steps take half the budget
    w = _Writer()
    p = Policy(Config(budget=160_000), w)
    p.parameter(10_000)  # max_numel itself: its values are kept
    assert _simulate(p, w, 1_000, 1_000)[:81] == list(range(80)) + [95]
    # one parameter over max_numel (an MLP's 784x256 weight): a sixteenth, 10 steps
    w = _Writer()
    p = Policy(Config(budget=160_000), w)
    p.parameter(200_704)
    full = _simulate(p, w, 1_000, 1_000)
    assert full[:11] == list(range(10)) + [25] and p.summary()["first"] == 10
    assert p.note(1_000).startswith(f"kept {len(full)} of 1,000 steps in full (the first 10, ")
    # a parameter seen once the first steps outgrew that share ends them there
    w = _Writer()
    p = Policy(Config(budget=160_000, max_value_numel=100), w)
    assert _simulate(p, w, 20, 1_000) == list(range(20))
    p.parameter(101)
    assert not p.decide(20) and p.summary()["first"] == 20
    # with a larger max_numel the same parameter's values are kept: the lesson's share
    w = _Writer()
    p = Policy(Config(budget=160_000, max_value_numel=300_000), w)
    p.parameter(200_704)
    assert p.share["first"] == 80_000


def test_a_traced_model_with_a_large_weight_keeps_fewer_first_steps(tmp_path):
    torch.manual_seed(0)
    X, y = torch.randn(32, 101), torch.randn(32, 1)

    def run(max_numel):
        net = torch.nn.Sequential(torch.nn.Linear(101, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        with gradtrace.trace(tmp_path / f"{max_numel}.gtrace", budget="1MB",
                             max_value_numel=max_numel) as t:
            for _ in range(60):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(X), y).backward()
                opt.step()
        return t.info.kept

    # the first weight has 808 elements: kept value by value, or over max_numel
    lesson, large = run(1_000), run(500)
    assert (1 << 20) / 16 < lesson["bytes"]["first"] <= (1 << 20) / 2
    assert 0 < large["bytes"]["first"] <= (1 << 20) / 16
    assert 0 < large["first"] < lesson["first"] and large["spaced"] > 0


def test_something_happening_keeps_the_steps_after_it_in_full():
    w = _Writer()
    p = Policy(Config(budget=100_000), w)
    full = _simulate(p, w, 2_000, 1_000, events={500})
    assert set(range(501, 516)) <= set(full)  # 15,000 bytes: the events' share
    assert p.summary()["events"] == [[500, "something"]] and p.summary()["after_events"] == 15
    assert "after something happened at step 500 (something)" in p.note(2_000)


def test_full_and_sampling():
    w = _Writer()
    assert _simulate(Policy(Config(full=True, budget=0), w), w, 300, 10**6) == list(range(300))
    w = _Writer()
    assert _simulate(Policy(Config(full=True, every=100), w), w, 300, 10) == [0, 100, 200]
    w = _Writer()
    assert _simulate(Policy(Config(budget=0), w), w, 30, 10) == []
    assert Policy(Config(), w).note(0) is None


def test_budget_sizes():
    assert Config(budget="64MB").budget == 64 << 20
    assert Config(budget="1.5k").budget == 1536
    with pytest.raises(UsageError, match="is not a size"):
        Config(budget="lots")
    with pytest.raises(UsageError, match="0 or more"):
        Config(budget=-1)


def _loop(steps, nan_at=None, forget_from=None, seed=0):
    torch.manual_seed(seed)
    X = torch.randn(16, 3)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * torch.randn(16, 1)
    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.05, momentum=0.9)
    for i in range(steps):
        if forget_from is None or i < forget_from:
            opt.zero_grad()
        loss = ((X @ w + b - y) ** 2).mean()
        if nan_at is not None and i >= nan_at:
            loss = loss * float("nan")
        loss.backward()
        opt.step()
    return w.detach().clone(), b.detach().clone()


@pytest.mark.slow  # 3,000 steps recorded in full: that they all fit the default budget is the point (9 s)
def test_a_3000_step_run_with_default_options(tmp_path):
    plain = _loop(3000)
    path = tmp_path / "long.gtrace"
    with gradtrace.trace(path) as t:
        traced = _loop(3000)
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))  # bit-identical
    sc = t.scalars()
    assert sc.steps.tolist() == list(range(3000))  # every step has its scalars
    assert sorted(sc.names) == ["b", "w"] and not np.isnan(sc.grad_norm).any()
    cw = sc.column("w")
    assert np.isfinite(sc.loss).all() and sc.loss[-1] < sc.loss[0]
    # the policy: all 3,000 small steps are the first steps, and fit the default budget
    assert sc.full.all() and t.steps.indices == list(range(3000))
    assert t.info.kept["first"] == 3000 and t.info.policy == {"full": False, "budget": 32 << 20}
    assert path.stat().st_size < Config().budget
    # norms agree with the values recorded in full
    s = t.step(7)
    upd = [e for e in s.events if e.kind == "update" and t.name(e.tensor) == "w"][0]
    assert math.isclose(sc.update_norm[7, cw], float((upd.after.data - upd.before.data).norm()), rel_tol=1e-5)
    acc = [e for e in s.events if e.kind == "accumulate" and t.name(e.tensor) == "w"][0]
    assert math.isclose(sc.grad_norm[7, cw], float(acc.after.data.norm()), rel_tol=1e-5)
    assert sc.accumulation_kind(7, cw) == "fresh" == acc.accumulation  # zero_grad() sets None


def test_a_small_budget_keeps_first_and_spaced_steps_and_says_so(tmp_path, capfd):
    path = tmp_path / "small.gtrace"
    with gradtrace.trace(path, budget="100KB") as t:
        _loop(3000)
    sc = t.scalars()
    full = t.steps.indices
    assert len(sc) == 3000 and sc.full.sum() == len(full) and sc.steps[sc.full].tolist() == full
    kept = t.info.kept
    first = kept["first"]
    assert full[:first] == list(range(first)) and kept["spaced"] == len(full) - first > 0
    assert np.diff(full[first - 1:]).min() >= 16
    # bytes of the steps in full within their shares; the scalars of 3,000 steps come on top
    assert sum(kept["bytes"].values()) <= 100 << 10
    assert path.stat().st_size < (100 << 10) + 3000 * 120
    err = capfd.readouterr().err
    assert f"gradtrace: kept {len(full):,} of 3,000 steps in full (the first {first}, " in err
    assert "--budget SIZE" in err and "--full" in err
    c = t.check()
    assert f"(checked {len(full)} of 3000 steps: the {len(full)} recorded in full; " in c.verdict()


def test_a_nan_keeps_the_steps_after_it(tmp_path):
    with gradtrace.trace(tmp_path / "nan.gtrace", budget="100KB") as t:
        _loop(1500, nan_at=1000)
    kept = t.info.kept
    assert kept["events"][0] == [1000, "a non-finite loss"]
    assert kept["after_events"] > 0 and 1001 in t.steps.indices and 1002 in t.steps.indices
    assert np.isnan(t.scalars().loss[1000:]).all()


def test_forgetting_zero_grad_is_a_new_pattern(tmp_path):
    with gradtrace.trace(tmp_path / "forgot.gtrace", budget="100KB") as t:
        _loop(1500, forget_from=900)
    ev = t.info.kept["events"]
    assert ev and ev[0][0] == 900 and "accumulation pattern" in ev[0][1]
    sc = t.scalars()
    assert sc.counts()["added"][901] == 2 and sc.counts()["fresh"][899] == 2
    assert 901 in t.steps.indices
    assert any(e.accumulation == "added" for e in t.step(901).events)
