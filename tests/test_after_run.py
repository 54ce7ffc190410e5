"""The after-run pipeline's animations (cli/animate.after_run and the report): each kind is
made on its own, and the report says which one is missing and why."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import gradtrace
from gradtrace.cli import animate as cli_animate
from gradtrace.render import backprop as backprop_mod
from gradtrace.render.report import build_report
from gradtrace.tracefile.outputs import outputs_of

from conftest import gradtrace_cmd


@pytest.fixture
def fitted(tmp_path):
    with gradtrace.trace(tmp_path / "trace.gtrace"):
        torch.manual_seed(0)
        x = torch.rand(10)
        w = torch.zeros(1, requires_grad=True)
        for _ in range(3):
            loss = (x * w - 2 * x).pow(2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.5 * w.grad
                w.grad.zero_()
    return gradtrace.load(tmp_path / "trace.gtrace")


@pytest.mark.slow  # the after-run work in-process: the training GIF drawn in full
def test_a_failing_backprop_animation_leaves_training_and_says_why(fitted, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(backprop_mod, "BackpropRenderer", broken)
    outputs = outputs_of(fitted.path)
    made: dict = {}
    cli_animate.after_run(fitted, outputs, None, made)
    assert outputs.animation("training").is_file()
    assert not outputs.animation("backprop").exists()
    why = made["animations_missing"]["backprop"]
    assert why == "failed (a gradtrace bug, please report it): RuntimeError: boom"
    assert "training" not in made["animations_missing"]
    err = capsys.readouterr().err
    assert "backprop animation failed (a gradtrace bug, please report it): RuntimeError: boom" in err
    page = build_report(fitted, outputs.report, outputs=outputs, render_missing=False,
                        missing_animations=made["animations_missing"]).read_text()
    assert "<h2>Animations</h2>" in page and "Training over time" in page
    assert "<b>Back-propagation, one step</b>: not made — failed (a gradtrace bug" in page


@pytest.mark.slow  # the after-run work in-process: an animation drawn for the report
def test_the_report_says_why_it_could_not_render_an_animation(fitted, monkeypatch):
    from gradtrace.errors import NothingToDrawError
    from gradtrace.render import training as training_mod

    def nothing(*args, **kwargs):
        raise NothingToDrawError("nothing to see, use --kind backprop")

    monkeypatch.setattr(training_mod, "TrainingRenderer", nothing)
    warned: list[str] = []
    page = build_report(fitted, Path(fitted.path).with_suffix(".html"), render_missing=True,
                        warn=warned.append).read_text()
    assert "<b>Training over time</b>: not made — skipped: nothing to see, use --kind backprop" in page
    assert warned == ["report: training animation left out (nothing to see, use --kind backprop)"]
    assert "Back-propagation, one step</h3><img" in page


SCRIPT = textwrap.dedent("""\
    import torch
    from torch import nn
    torch.manual_seed(0)
    X = torch.randn(32, 2)
    y = X @ torch.tensor([[1.0], [-2.0]])
    model = nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.MSELoss()
    for t in range(5):
        loss = loss_fn(model(X), y)  # 损失函数 (均方误差): $\\argmin_w \\|Xw - y\\|^2$
        opt.zero_grad()
        loss.backward()
        opt.step()
    """)


@pytest.mark.slow  # a real `gradtrace run` with its GIFs and report
def test_gradtrace_run_of_a_bias_free_model_with_cjk_and_dollars(tmp_path):
    (tmp_path / "fit.py").write_text(SCRIPT, encoding="utf-8")
    r = gradtrace_cmd("run", "--animate", "-o", "out/trace.gtrace", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Glyph" not in r.stderr and "Warning" not in r.stderr, r.stderr
    assert "findfont" not in r.stderr, r.stderr
    assert "failed" not in r.stderr and "skipped" not in r.stderr, r.stderr
    for kind in ("backprop", "training"):
        assert f"gradtrace: {kind} animation: out/{kind}.gif" in r.stderr
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Training over time</h3><img" in page and "not made" not in page


@pytest.mark.slow  # `gradtrace report` in-process, with and without its animations drawn
def test_report_draws_missing_animations_only_with_animate(fitted):
    from html import escape

    from click.testing import CliRunner

    from gradtrace.cli import cli
    from gradtrace.render.report import NOT_MADE_YET

    outputs = outputs_of(fitted.path)
    r = CliRunner().invoke(cli, ["report", str(fitted.path)])
    assert r.exit_code == 0, r.output
    assert not outputs.animation("backprop").exists() and not outputs.animation("training").exists()
    page = outputs.report.read_text()
    for title in ("Back-propagation, one step", "Training over time"):
        assert f"<b>{title}</b>: not made — {escape(NOT_MADE_YET)}" in page
    assert "<img alt=\"Training over time\"" not in page
    r = CliRunner().invoke(cli, ["report", "--animate", str(fitted.path)])
    assert r.exit_code == 0, r.output
    assert outputs.animation("backprop").is_file() and outputs.animation("training").is_file()
    page = outputs.report.read_text()
    assert "Back-propagation, one step</h3><img" in page and "Training over time</h3><img" in page
    assert "<p class='muted missing-animation'>" not in page
    r = CliRunner().invoke(cli, ["report", str(fitted.path)])  # made once, embedded from then on
    assert r.exit_code == 0 and "<p class='muted missing-animation'>" not in outputs.report.read_text()
