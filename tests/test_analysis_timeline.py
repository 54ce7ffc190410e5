"""Long runs: the check reads every step's scalars and a bounded number of steps in full (issue 13)."""

from __future__ import annotations

import numpy as np
import torch
from click.testing import CliRunner

import gradtrace
from gradtrace.analysis.check import check_trace
from gradtrace.analysis.timeline import scalar_timeline, steps_to_check
from gradtrace.cli import cli


def _loop(steps, forget_at=(), accumulate_at=()):
    """Least squares with momentum SGD; ``forget_at``: steps that skip ``zero_grad()``;
    ``accumulate_at``: steps whose update is left to the next step (gradient accumulation
    on purpose: two backward passes, then one update)."""
    torch.manual_seed(0)
    true_w = torch.tensor([[1.0], [-2.0], [0.5]])
    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=0.02, momentum=0.9)
    for i in range(steps):
        X = torch.randn(16, 3)  # a fresh batch each step: the parameters never stop moving
        y = X @ true_w + 0.3 + 0.1 * torch.randn(16, 1)
        if i not in forget_at and i - 1 not in accumulate_at:
            opt.zero_grad()
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        if i not in accumulate_at:
            opt.step()


def _checked(report) -> list[int]:
    return sorted({c.step for c in report.of("analytic_mse")})


def test_steps_to_check_keeps_first_last_pointed_and_the_step_before_then_spacing():
    full = list(range(0, 100)) + list(range(116, 1000, 16))
    got = steps_to_check(full, [505, 50, 9999], 10)
    assert len(got) == 10 and got == sorted(got)
    assert {0, 996, 50, 49} <= set(got)
    assert 505 not in got and 504 not in got   # not recorded in full
    assert steps_to_check(full, [50], None) == full == steps_to_check(full, [], len(full))


def test_max_steps_checks_first_last_and_the_steps_the_scalars_point_at(tmp_path):
    with gradtrace.trace(tmp_path / "t.gtrace", full=True) as t:
        _loop(200, forget_at={120})
    report = check_trace(t, max_steps=6)
    steps = _checked(report)
    assert len(steps) == 6 and {0, 199, 119, 120} <= set(steps)
    assert report.steps_checked == 6 and report.steps_full == 200
    assert ("(checked 6 of 200 steps: 6 of the 200 recorded in full (--max-steps 6): the first, "
            "the last, those the scalars point at and evenly spaced others; forgot_zero_grad and "
            "non_finite from every step's scalars)") in report.verdict()
    forgot = [f for f in report.findings if f.kind == "forgot_zero_grad"]
    assert sorted((f.step, f.param) for f in forgot) == [(120, "b"), (120, "w")]
    assert all("test_analysis_timeline.py" in (f.source or "") for f in forgot)  # seen in full
    # every step read, as before, when there is no budget: the same findings
    whole = check_trace(t)
    assert _checked(whole) == list(range(200)) and "checked" not in whole.verdict()
    assert [str(f) for f in whole.findings] == [str(f) for f in report.findings]


def test_forgot_zero_grad_at_a_step_kept_as_scalars_only(tmp_path):
    # gradient accumulation on purpose at step 2 (seen in full: not a finding); the zero_grad()
    # forgotten at step 1500 of a long run, whose steps there are scalars only
    with gradtrace.trace(tmp_path / "t.gtrace", budget="60KB") as t:
        _loop(2000, forget_at={1500}, accumulate_at={2})
    sc = t.scalars()
    assert len(sc) == 2000 and not sc.full[1500] and sc.full[2] and sc.full[3]
    assert 1500 not in t.steps.indices
    tl = scalar_timeline(sc)
    assert {sc.names[j]: s for j, s in tl.forgot.items()} == {"w": [1500], "b": [1500]}
    report = check_trace(t)
    found = sorted((f.param, f.step) for f in report.findings if f.kind == "forgot_zero_grad")
    assert found == [("b", 1500), ("w", 1500)]
    f = next(f for f in report.findings if f.kind == "forgot_zero_grad")
    assert "step 1500 was kept as scalars only" in f.message
    assert "(SGD.step() at test_analysis_timeline.py:" in f.message  # the update, from a step in full
    assert f"checked {report.steps_checked} of 2000 steps" in report.verdict()


def test_zeroing_through_grad_data_is_seen_in_the_scalars(tmp_path):
    """``w.grad.data.zero_()`` (early tutorials' idiom) zeroes the values without moving
    ``w.grad``'s version counter: the scalars still see a gradient met as zeros, so no
    forgotten zero_grad is found; leaving the zeroing out is found at step 1."""
    def run(zero):
        torch.manual_seed(0)
        x = torch.rand(20)
        w, b = torch.rand(1, requires_grad=True), torch.rand(1, requires_grad=True)
        for _ in range(6):
            loss = (x * w + b - (3 * x + 0.8)).pow(2).mean()
            if zero and w.grad is not None:
                w.grad.data.zero_()
                b.grad.data.zero_()
            loss.backward()
            w.data -= 0.01 * w.grad.data
            b.data -= 0.01 * b.grad.data

    with gradtrace.trace(tmp_path / "zeroed.gtrace") as t:
        run(zero=True)
    sc = t.scalars()
    assert sc.accumulation[0].tolist() == [0, 0]                    # fresh at step 0
    assert (sc.accumulation[1:] == 1).all(), sc.accumulation         # onto zeros after
    assert not [f for f in check_trace(t).findings if f.kind == "forgot_zero_grad"]
    with gradtrace.trace(tmp_path / "forgot.gtrace") as t2:
        run(zero=False)
    assert (t2.scalars().accumulation[1:] == 2).all()                # on top
    found = {(f.param, f.step) for f in check_trace(t2).findings if f.kind == "forgot_zero_grad"}
    assert found == {("w", 1), ("b", 1)}


def test_the_cli_option_bounds_the_steps_read(tmp_path):
    path = tmp_path / "t.gtrace"
    with gradtrace.trace(path, full=True):
        _loop(60)
    out = CliRunner().invoke(cli, ["check", str(path), "--max-steps", "5", "--no-numeric"])
    assert out.exit_code == 0, out.output
    assert "(checked 5 of 60 steps: 5 of the 60 recorded in full (--max-steps 5)" in out.output
    out = CliRunner().invoke(cli, ["check", str(path), "--max-steps", "0", "--no-numeric"])
    assert out.exit_code == 0 and "checked" not in out.output.splitlines()[0]
    out = CliRunner().invoke(cli, ["check", str(path), "--max-steps", "1"])
    assert out.exit_code != 0 and "max_steps must be 2 or more" in str(out.exception)


def test_the_timeline_finds_non_finite_values_jumps_and_patterns():
    from gradtrace.tracefile.scalars import Scalars

    n = 40
    loss = np.linspace(2.0, 1.0, n)
    loss[20] = 30.0
    loss[30] = np.inf
    acc = np.ones((n, 2), np.int8)
    acc[25] = 2
    upd = np.full((n, 2), 0.1)
    g = np.ones((n, 2))
    sc = Scalars(np.arange(n), np.ones(n, bool), loss, (1, 2), ("w", "b"), g, g.copy(), upd, acc)
    tl = scalar_timeline(sc)
    assert tl.non_finite == (30, "the loss was inf")
    assert [s for s, _, _ in tl.jumps] == [20]
    assert tl.patterns == [25] and tl.forgot == {0: [25], 1: [25]}
    assert tl.pointed()[:2] == [30, 25]
    upd[24] = 0.0   # no change between the backward passes of 24 and 25: accumulation on purpose
    assert scalar_timeline(sc).forgot == {}


def test_the_training_series_and_animation_cover_every_step_from_the_scalars(tmp_path):
    from gradtrace.analysis.training import training_series
    from gradtrace.render.animate import animation_of_trace

    with gradtrace.trace(tmp_path / "t.gtrace", budget="60KB") as t:
        _loop(2000, forget_at={1500})
    sc = t.scalars()
    s = training_series(t)
    assert s.steps.tolist() == list(range(2000)) and len(s) == 2000
    np.testing.assert_array_equal(s.loss, sc.loss)
    # values come from the steps in full, and only from them
    assert s.steps[s.read].tolist() == t.steps.indices and s.sampled
    w = next(p.tid for p in s.params if t.name(p.tid) == "w")
    np.testing.assert_allclose(s.grad_norm[w], sc.grad_norm[:, sc.column("w")])
    assert s.events["added"][1500] == 2 and s.events["added"].sum() == 2   # both parameters
    assert s.events["update"][1700] == 2 and s.events["fresh"][1700] == 2
    assert s.events["zero"][1700] == 2        # the next step met .grad cleared (set to None)
    assert s.events["zero"][1499] == 0        # ...not before the forgotten zero_grad()
    anim = animation_of_trace(t, kind="training", frames=40)
    frames = [anim.renderer.step_of(i) for i in range(len(anim))]
    assert 2 < len(frames) <= 40 and frames[0] == 0 and frames[-1] == t.steps.indices[-1]
    assert frames == sorted(set(frames)) and max(frames) > 1000   # spread over the run
    assert "curves: all 2000 steps; values: the " in anim.note


def test_the_explorer_lays_out_a_graph_once_when_only_an_unnamed_inputs_id_changes(tmp_path):
    from gradtrace.render.explorer_data import Shapes, step_data

    torch.manual_seed(0)
    x = torch.randn(16)
    y = torch.where(x > 0, 0.5 * x ** 2 - x + 1, 2 * x + 1)
    a, b = (torch.zeros((), requires_grad=True) for _ in range(2))
    opt = torch.optim.SGD([a, b], lr=0.01, momentum=0.9)

    def positive(v):  # made without grad and held by no variable: an input titled by its id
        with torch.no_grad():
            return v > 0

    with gradtrace.trace(tmp_path / "t.gtrace") as t:
        for _ in range(4):
            opt.zero_grad()
            loss = ((torch.where(positive(x), a * x ** 2, b * x) - y) ** 2).mean()
            loss.backward()
            opt.step()
    shapes = Shapes()
    pages = [step_data(t.step(i), shapes) for i in (1, 2, 3)]
    assert len({p["shape"] for p in pages}) == 1          # one picture, laid out once
    model = shapes.models[pages[0]["shape"]].graph.nodes
    ids = [n for n, a_ in model.items() if a_["kind"] == "input" and a_["title"].startswith("t")
           and a_["title"][1:].isdigit()]
    assert ids, "the run has an input titled by its id"
    titles = [p["nodes"][str(ids[0])].get("title", model[ids[0]]["title"]) for p in pages]
    assert len(set(titles)) == 3 and "title" not in pages[0]["nodes"][str(ids[0])]


def test_where_and_comparisons_are_sized_after_they_run():
    # (sizing on the meta device first imports torch._dynamo: over a second of every check
    # of a run with control flow)
    from gradtrace.analysis.numeric import _numel_bound

    cond = torch.ones(4, 1, dtype=torch.bool)
    assert _numel_bound("where", (cond, torch.zeros(4, 3), 0.0), {}) == 12
    assert _numel_bound("gt", (torch.zeros(5), 0), {}) == 5


def test_a_backward_pass_with_no_single_loss_is_not_a_nan_loss():
    """Two losses through torch.autograd.backward([l1, l2]) next to a plain l.backward(): the
    first has no one number to call the loss. It was read as a NaN loss in a run with finite
    ones, and check said "non_finite (step 0): the loss was nan"."""
    torch.manual_seed(0)
    enc, dec = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with gradtrace.trace(budget=0) as t:  # the scalars alone
        for _ in range(3):
            h = torch.relu(enc(x))
            l1, l2 = torch.nn.functional.mse_loss(dec(h), y), h.pow(2).mean()
            torch.autograd.backward([l1, l2])
            dec(h.detach()).pow(2).mean().backward()
    sc = t.result.scalars()
    assert sc.no_loss.tolist() == [True, False] * 3 and np.isnan(sc.loss[0])
    assert scalar_timeline(sc).non_finite is None
    assert not [f for f in check_trace(t.result).findings if f.kind == "non_finite"]


def _gan(zero_g: bool = True):
    """pytorch/examples' DCGAN loop, shrunk: D's two passes, D's step, then G's pass through D."""
    torch.manual_seed(0)
    G, D = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Sigmoid())
    crit = torch.nn.BCELoss()
    oG, oD = torch.optim.SGD(G.parameters(), 0.1), torch.optim.SGD(D.parameters(), 0.1)
    real = torch.randn(4, 2)
    with gradtrace.trace(full=True) as t:
        for _ in range(4):
            D.zero_grad()
            crit(D(real), torch.ones(4, 1)).backward()
            fake = G(torch.randn(4, 2))
            crit(D(fake.detach()), torch.zeros(4, 1)).backward()
            oD.step()
            if zero_g:
                G.zero_grad()
            crit(D(fake), torch.ones(4, 1)).backward()  # adds onto D's gradient: D clears it
            oG.step()
    return t.result


def test_a_gan_generator_pass_through_the_discriminator_is_no_forgotten_zero_grad():
    sc = _gan().scalars()
    # D's passes: fresh, then added on purpose (two losses), then G's pass adds onto it too;
    # G's column: no gradient from D's passes (-1), fresh from its own
    assert sc.accumulation[:3, sc.column("D.0.bias")].tolist() == [0, 2, 2]
    assert sc.accumulation[:3, sc.column("G.bias")].tolist() == [-1, -1, 0]
    assert scalar_timeline(sc).forgot == {}
    assert not check_trace(_gan()).findings


def test_a_generator_never_zeroed_is_still_a_forgotten_zero_grad():
    tl = scalar_timeline(_gan(zero_g=False).scalars())
    sc = _gan(zero_g=False).scalars()
    assert set(tl.forgot) == {sc.column("G.weight"), sc.column("G.bias")}
