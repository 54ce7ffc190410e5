"""cli/animate.py: `gradtrace animate` and the animations `gradtrace run` writes, in real subprocesses."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from PIL import Image

from conftest import gradtrace_cmd

SCRIPT = textwrap.dedent("""\
    import torch
    torch.manual_seed(0)
    x = torch.rand(20)
    y = 3 * x + 0.8
    w = torch.rand(1, requires_grad=True)
    b = torch.rand(1, requires_grad=True)
    for i in range(4):
        loss = (x * w + b - y).pow(2).mean()
        loss.backward()
        with torch.no_grad():
            w -= 0.1 * w.grad
            b -= 0.1 * b.grad
            w.grad.zero_()
            b.grad.zero_()
    """)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = tmp_path_factory.mktemp("anim")
    (d / "fit.py").write_text(SCRIPT)
    r = gradtrace_cmd("run", "--no-report", "--animate", "-o", str(d / "out" / "trace.gtrace"),
                      "fit.py", cwd=d)
    assert r.returncode == 0, r.stderr
    return d, r


@pytest.mark.slow  # `gradtrace run` / `animate` in forked children, GIFs drawn
def test_run_writes_both_animations(recorded):
    d, r = recorded
    for kind in ("backprop", "training"):
        path = d / "out" / f"{kind}.gif"
        assert f"{kind} animation: out/{kind}.gif" in r.stderr
        with Image.open(path) as im:
            assert im.n_frames > 3


@pytest.mark.slow  # `gradtrace run` in a forked child
def test_run_without_animate_says_how_to_make_them(tmp_path):
    """Off the user's path by default: no GIF, one line with the command that makes them."""
    (tmp_path / "fit.py").write_text(SCRIPT)
    r = gradtrace_cmd("run", "--no-report", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "animat" in line]
    assert said == ["gradtrace: animations: gradtrace animate gradtrace-out/fit/trace.gtrace "
                    "--kind backprop (or --kind training); or run with --animate"], r.stderr
    assert not list(tmp_path.rglob("*.gif"))


@pytest.mark.slow  # `gradtrace run` in a forked child
def test_a_run_without_a_backward_pass_suggests_no_animation(tmp_path):
    """Nothing to animate (the script trains in another thread, or never calls backward):
    with --animate one line says why; without it no command that would make nothing."""
    (tmp_path / "fwd.py").write_text("import torch\nprint(float((torch.ones(3) * 2).sum()))\n")
    r = gradtrace_cmd("run", "--no-report", "fwd.py", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "6.0\n", r.stderr
    assert "animat" not in r.stderr
    r = gradtrace_cmd("run", "--no-report", "--animate", "fwd.py", cwd=tmp_path)
    said = [line for line in r.stderr.splitlines() if "animat" in line]
    assert said == ["gradtrace: animations skipped: no recorded step has a backward pass, so "
                    "there is no gradient to animate"], r.stderr


@pytest.mark.slow  # `gradtrace run` / `animate` in forked children, GIFs drawn
def test_run_no_animate(tmp_path):
    (tmp_path / "fit.py").write_text(SCRIPT)
    r = gradtrace_cmd("run", "--no-report", "--no-animate", "fit.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "animation" not in r.stderr
    assert not list(tmp_path.rglob("*.gif"))


@pytest.mark.slow  # `gradtrace run` / `animate` in forked children, GIFs drawn
def test_animate_writes_every_output_and_skips_mp4_cleanly(recorded):
    d, _ = recorded
    r = gradtrace_cmd("animate", "out/trace.gtrace", "--kind", "backprop", "--step", "2",
                      "--dpi", "30", "-o", "bp.gif", "-o", "bp.html", "-o", "bp.mp4",
                      "-o", "bp.png", "--still", "3", cwd=d)
    assert r.returncode == 0, r.stderr
    assert (d / "bp.gif").exists() and (d / "bp.html").exists() and (d / "bp.png").exists()
    assert "backprop frame 3 (of frames 0-" in r.stderr
    if shutil.which("ffmpeg") is None:
        assert "bp.mp4 skipped: MP4 needs ffmpeg" in r.stderr
        assert not (d / "bp.mp4").exists()
    assert "Traceback" not in r.stderr


@pytest.mark.slow  # `gradtrace run` / `animate` in forked children, GIFs drawn
def test_animate_errors_are_one_line(recorded):
    d, _ = recorded
    r = gradtrace_cmd("animate", "out/trace.gtrace", "--kind", "backprop", "--step", "99", cwd=d)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == \
        "gradtrace: error: step 99 was not recorded; recorded steps are 0..3"
    r = gradtrace_cmd("animate", "out/trace.gtrace", "-o", "x.avi", cwd=d)
    assert r.returncode == 2 and "unknown format" in r.stderr
    if shutil.which("ffmpeg") is None:
        r = gradtrace_cmd("animate", "out/trace.gtrace", "-o", "only.mp4", cwd=d)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "install ffmpeg" in r.stderr
