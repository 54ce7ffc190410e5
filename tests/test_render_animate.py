"""Animations: the backprop plan, the training series and surface, and the files they save."""

from __future__ import annotations

import stat
import sys
import re
import textwrap

import numpy as np
import pytest
import torch

import gradtrace
from gradtrace.errors import RenderError, UsageError
from gradtrace.render import animate as animate_mod
from gradtrace.render.animate import AnimateOptions, animation_of_trace, parse_size, subsample
from gradtrace.render.backprop import backprop_plan, fmt_num, fmt_value

from conftest import run_demo_plain

DPI = 24  # tests look at pixels, not at text: small frames are fast


def _train(steps: int, zero: bool, lr: float = 0.1):
    """y = 3x + 0.8 fitted by full-batch gradient descent on scalars w, b (seed 5's lesson)."""
    torch.manual_seed(0)
    x = torch.rand(20)
    y = 3 * x + 0.8
    w = torch.rand(1, requires_grad=True)
    b = torch.rand(1, requires_grad=True)
    for _ in range(steps):
        loss = (x * w + b - y).pow(2).mean()
        if zero and w.grad is not None:
            w.grad.zero_()
            b.grad.zero_()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad


@pytest.fixture(scope="module")
def zeroing():
    """12 steps of a script that clears .grad before each backward()."""
    with gradtrace.trace() as t:
        _train(12, zero=True)
    return t.result


@pytest.fixture(scope="module")
def never_zeroing():
    """The same script without the zeroing: every backward() adds onto the last."""
    with gradtrace.trace() as t:
        _train(6, zero=False)
    return t.result


def _pixels(img) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def _reddish(img) -> int:
    """Pixels in the bug's colours (#e03131 edges, #ffc9c9 fills)."""
    a = _pixels(img)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    return int(((r > 200) & (g < 215) & (b < 215) & (r - g > 40)).sum())


# -- options ---------------------------------------------------------------------------------------

def test_options_defaults_and_validation():
    o = AnimateOptions(kind="backprop").resolved()
    assert (o.fps, o.frames, o.dpi) == (1.0, 80, 80)
    assert AnimateOptions(kind="training", size="8x4.5").size == (8.0, 4.5)
    assert parse_size((10, 6)) == (10.0, 6.0)
    with pytest.raises(UsageError, match="unknown animation kind"):
        AnimateOptions(kind="movie")
    with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
        AnimateOptions(size="big")
    with pytest.raises(UsageError, match="frame budget"):
        AnimateOptions(frames=1)
    with pytest.raises(UsageError, match="unknown animation option.*colour"):
        AnimateOptions.build("training", colour="red")


def test_subsample_keeps_ends_and_budget():
    assert subsample(5, 10) == [0, 1, 2, 3, 4]
    s = subsample(3000, 180)
    assert len(s) == 180 and s[0] == 0 and s[-1] == 2999
    assert all(b > a for a, b in zip(s, s[1:]))


# -- the backprop explainer ------------------------------------------------------------------------

def test_a_mean_that_is_rounding_noise_reads_as_zero_with_the_range():
    """Softmax gradients sum to zero over the classes, so their computed mean is rounding
    noise (1e-11); the explainer says 0 and gives the range, as the graph does."""
    torch.manual_seed(0)
    X = torch.randn(12, 2)
    y = torch.arange(12) % 3
    W = torch.randn(2, 3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    with gradtrace.trace() as t:
        for _ in range(2):
            loss = torch.nn.functional.cross_entropy(X @ W + b, y)
            loss.backward()
            with torch.no_grad():
                for p in (W, b):
                    p -= 0.1 * p.grad
                    p.grad.zero_()
    step = t.result.steps[1]
    grad_w = next(e.incoming for e in step.accumulations if e.tensor == t.find("W").tid)
    st = grad_w.stats
    assert st.mean != 0 and abs(st.mean) < 1e-6 * max(-st.min, st.max)  # the noise is there
    assert fmt_value(grad_w) == f"mean 0, {fmt_num(st.min)} … {fmt_num(st.max)}"
    text = " ".join(animation_of_trace(t.result, kind="backprop", dpi=DPI).captions)
    assert f"W.grad = 0 + ({fmt_value(grad_w)})" in text
    assert not re.search(r"mean −?[\d.]+e−\d", text), "a mean of float noise is shown"


def test_accumulation_frame_differs_when_the_script_never_zeroes(zeroing, never_zeroing):
    good = animation_of_trace(zeroing, kind="backprop", dpi=DPI)
    bad = animation_of_trace(never_zeroing, kind="backprop", dpi=DPI)
    fg = next(i for i, f in enumerate(good.renderer.plan.frames) if f.phase == "accumulate")
    fb = next(i for i, f in enumerate(bad.renderer.plan.frames) if f.phase == "accumulate")
    g, b = good.renderer.plan.frames[fg], bad.renderer.plan.frames[fb]
    assert {c.mark for c in g.cells.values()} == {"zeros"} and not g.alert
    assert {c.mark for c in b.cells.values()} == {"added"} and b.alert
    assert "added onto zeros" in g.caption and "ADDED to the old gradient" in b.caption
    # and it looks different: the bug's frame is red where the correct one is green
    assert _reddish(bad.frame(fb)) > 5 * max(1, _reddish(good.frame(fg)))
    # the bug's .grad is the sum of this step's gradient and the last one
    w = never_zeroing.find("w").tid
    e = next(e for e in never_zeroing.steps[1].accumulations if e.tensor == w)
    assert torch.allclose(b.cells[w].grad.data, e.before.data + e.incoming.data)


@pytest.mark.slow  # draws every frame
def test_backprop_frames_differ_and_positions_stay(zeroing):
    anim = animation_of_trace(zeroing, kind="backprop", dpi=DPI)
    images = [_pixels(im) for im in anim.images()]
    assert len(images) == len(anim) == len(anim.captions)
    for a, b in zip(images, images[1:]):
        assert (a != b).any()
    # nodes never move: the scene's positions are fixed once per plan
    assert anim.renderer.plan.scene.pos == backprop_plan(zeroing, zeroing.steps[1]).scene.pos


# -- training over time --------------------------------------------------------------------------------

def test_training_trajectory_is_the_recorded_parameters(zeroing):
    anim = animation_of_trace(zeroing, kind="training", dpi=DPI)
    r = anim.renderer
    assert len(anim) == 12 and r.surface and r.surface.exact
    w, b = zeroing.find("w").tid, zeroing.find("b").tid
    recorded = np.array([[s.value(w).item(), s.value(b).item()] for s in zeroing.steps])
    list(anim.images(frames=[11]))
    xs, ys = r.traj_line.get_data()
    np.testing.assert_allclose(np.column_stack([xs, ys]), recorded, rtol=1e-6)
    list(anim.images(frames=[4]))
    xs, ys = r.traj_line.get_data()
    np.testing.assert_allclose(np.column_stack([xs, ys]), recorded[:5], rtol=1e-6)
    # the current point's loss on the drawn surface is the loss the step recorded
    s = r.surface
    assert s.loss(*recorded[4]) == pytest.approx(zeroing.steps[4].loss, rel=1e-5)
    # the optimum is the line the data came from
    np.testing.assert_allclose(s.optimum, [3.0, 0.8], atol=1e-4)


def test_training_frames_differ_and_budget_subsamples(zeroing):
    anim = animation_of_trace(zeroing, kind="training", frames=5, dpi=DPI)
    assert len(anim) == 5
    assert "12 steps shown in 5 frames" in anim.note
    assert [anim.renderer.step_of(i) for i in (0, 4)] == [0, 11]
    images = [_pixels(im) for im in anim.images()]
    for a, b in zip(images, images[1:]):
        assert (a != b).any()


def test_training_series_counts_every_event(zeroing, never_zeroing):
    from gradtrace.analysis.training import training_series

    s = training_series(zeroing)
    assert list(s.steps) == list(range(12))
    assert s.events["fresh"].tolist() == [2] + [0] * 11
    assert s.events["zeros"].tolist() == [0] + [2] * 11
    assert s.events["zero"].sum() == 22 and s.events["update"].sum() == 24
    bad = training_series(never_zeroing)
    assert bad.events["added"].tolist() == [0] + [2] * 5 and bad.events["zero"].sum() == 0
    # a long run is read at evenly spaced steps; the counts still cover every step
    short = training_series(zeroing, max_read=4)
    assert short.sampled and len(short.read) == 4 and len(short.values[zeroing.find("w").tid]) == 4
    assert short.events["update"].sum() == 24


def test_training_on_a_plane_for_more_than_two_parameters(demo_trace):
    trace = demo_trace("linreg")            # seed 1: w (2, 1) and b: three numbers
    anim = animation_of_trace(trace, kind="training", frames=4, dpi=DPI)
    S = anim.renderer.surface
    assert S and not S.exact and "plane through the optimum" in S.description
    np.testing.assert_allclose(S.optimum, [2.0, -3.4, 4.2], atol=2e-3)
    np.testing.assert_allclose(S.axes @ S.axes.T, np.eye(2), atol=1e-9)
    theta = anim.renderer.series.theta(S.tids)
    np.testing.assert_allclose(anim.renderer.xy, (theta - S.optimum) @ S.axes.T)
    assert len(list(anim.images())) == 4
    assert anim.renderer.pred_scatter is not None      # two features: predicted vs true


def test_a_diverging_run_is_drawn_quietly(recwarn):
    """lr far past the stability bound: values reach inf and nan; the picture frames the
    steps before the blow-up and says where the path leaves it."""
    with gradtrace.trace() as t:
        _train(25, zero=True, lr=50.0)
    anim = animation_of_trace(t.result, kind="training", dpi=DPI)
    assert not np.isfinite(anim.renderer.series.loss).all()
    images = list(anim.images(frames=[0, len(anim) - 1]))
    assert len(images) == 2
    texts = [x.get_text() for x in anim.renderer.ax_traj.texts]
    assert any("leaves the picture at step" in x for x in texts)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# -- files ---------------------------------------------------------------------------------------------

@pytest.mark.slow  # writes a GIF twice
def test_gif_has_every_frame_and_is_deterministic(zeroing, tmp_path):
    from PIL import Image

    anim = animation_of_trace(zeroing, kind="training", frames=6, dpi=DPI)
    a, b = anim.save(tmp_path / "a.gif"), anim.save(tmp_path / "b.gif")
    with Image.open(a) as im:
        assert im.n_frames == 6
        assert im.info["duration"] == 80     # 12 fps, in GIF's hundredths of a second
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob(".*part*"))


@pytest.mark.slow  # draws every frame
def test_html_is_self_contained(zeroing, tmp_path):
    anim = animation_of_trace(zeroing, kind="training", frames=4, dpi=DPI)
    path = anim.save(tmp_path / "bp.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert 'class="fa' not in text               # no icon font to fetch
    assert text.count("data:image/png;base64,") == len(anim)
    assert path.read_bytes() == anim.save(tmp_path / "again.html").read_bytes()  # deterministic
    fragment = anim._repr_html_()
    assert "<script" in fragment and "https://" not in fragment


def test_mp4_without_ffmpeg_is_skipped_cleanly(zeroing, tmp_path, monkeypatch):
    monkeypatch.setattr(animate_mod, "mp4_available", lambda: False)
    anim = animation_of_trace(zeroing, kind="backprop", dpi=DPI)
    with pytest.raises(RenderError, match="MP4 needs ffmpeg"):
        anim.save(tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_mp4_goes_through_an_ffmpeg_writer(zeroing, tmp_path):
    """A stand-in ffmpeg that counts the raw frames it is sent (there is no real one here)."""
    import matplotlib

    fake = tmp_path / "ffmpeg"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        data = sys.stdin.buffer.read()
        args = sys.argv[1:]
        size = args[args.index("-s") + 1]
        open(args[-1], "w").write(f"{{len(data)}} {{size}}")
        """))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    old = matplotlib.rcParams["animation.ffmpeg_path"]
    matplotlib.rcParams["animation.ffmpeg_path"] = str(fake)
    try:
        anim = animation_of_trace(zeroing, kind="training", frames=3, dpi=DPI, size=(8, 4.5))
        out = anim.save(tmp_path / "t.mp4")
    finally:
        matplotlib.rcParams["animation.ffmpeg_path"] = old
    nbytes, size = out.read_text().split()
    w, h = (int(v) for v in size.split("x"))
    assert (w, h) == (8 * DPI, int(4.5 * DPI))
    assert int(nbytes) == 3 * w * h * 4


def test_save_checks_the_path(zeroing, tmp_path):
    anim = animation_of_trace(zeroing, kind="backprop", dpi=DPI)
    with pytest.raises(UsageError, match="suffix"):
        anim.save(tmp_path / "x.avi")
    with pytest.raises(UsageError, match="does not exist"):
        anim.save(tmp_path / "missing" / "x.gif")


def test_trace_animate_is_the_api(zeroing):
    anim = zeroing.animate(kind="training", frames=3)
    assert anim.kind == "training" and len(anim) == 3
    assert "training over 12 steps" in anim.title
    assert anim.frame(-1).size == (12 * 72, int(6.75 * 72))


# -- the seed demos: SEEDS.md lessons 1, 3 and 5, recorded once per session ---------------------------

#: seed -> (demo, the forward ops the explainer shows for a step, the phases of step 1)
SEED_STEPS = {
    1: ("linreg", ["matmul", "add", "reshape", "sub", "pow", "div", "sum"],
        # sgd() updates and zeroes one parameter after the other
        ["forward", "backward", "accumulate", "update", "zero", "update", "zero"]),
    3: ("crop_yield", ["t", "matmul", "add", "sub", "mul", "sum", "div"],
        ["forward", "backward", "accumulate", "update", "zero"]),
    # w.grad.data.zero_() runs after the forward pass, just before backward()
    5: ("gd_backprop", ["mul", "add", "sub", "pow", "mean"],
        ["forward", "zero", "backward", "accumulate", "update"]),
}

#: seed -> the demo's model, written again from its parameters by name
SEED_MODELS = {
    1: lambda X, p: X @ p["w"] + p["b"],
    3: lambda X, p: X @ p["w"].T + p["b"],
    5: lambda X, p: X * p["w"] + p["b"],
}


_SEED_TRAINING: dict = {}


def _seed_training(demo_trace, seed: int):
    """The training animation of a seed demo in 4 frames (reading a run of 3,000 steps and
    fitting its surface takes seconds, so once per session)."""
    if seed not in _SEED_TRAINING:
        trace = demo_trace(SEED_STEPS[seed][0])
        _SEED_TRAINING[seed] = trace, animation_of_trace(trace, kind="training", frames=4, dpi=DPI)
    return _SEED_TRAINING[seed]


def _word_after_colon(caption: str) -> str:
    return caption.split(": ", 1)[1].split(" ")[0].rstrip(",")


@pytest.mark.slow  # draws a demo's animation, frame by frame (seconds each)
@pytest.mark.parametrize("seed", sorted(SEED_STEPS))
def test_seed_backprop_explainer(demo_trace, seed):
    name, ops, phases = SEED_STEPS[seed]
    trace = demo_trace(name)
    anim = animation_of_trace(trace, kind="backprop", dpi=DPI)
    plan = anim.renderer.plan
    step = trace.step(1)      # the default: the first step whose .grad may already hold something
    assert plan.step == 1 and plan.phases == phases
    forward = [f for f in plan.frames if f.phase == "forward"]
    assert [_word_after_colon(f.caption) for f in forward] == ops
    backward = [f for f in plan.frames if f.phase == "backward"][1:]
    assert [_word_after_colon(f.caption) for f in backward] == \
        [n.name for n in step.backward.execution_order]
    # intro, the ops, backward's start and its nodes, .grad, one frame per event group, done
    assert len(plan.frames) == 1 + len(ops) + 1 + len(backward) + 1 + (len(phases) - 3) + 1
    # the .grad after backward() and the parameters after the update are the recorded ones
    acc = next(f for f in plan.frames if f.phase == "accumulate")
    assert {acc.cells[e.tensor].mark for e in step.accumulations} == {"zeros"}
    for e in step.accumulations:
        assert torch.equal(acc.cells[e.tensor].grad.data, e.after.data)
    done = plan.frames[-1]
    assert done.phase == "done" and len(step.updates) == 2
    for e in step.updates:
        assert torch.equal(done.cells[e.tensor].value.data, e.after.data)
    # drawn: the first frame of each phase and the last one (every frame would take seconds)
    picked = [i for i, f in enumerate(plan.frames) if i == 0 or f.phase != plan.frames[i - 1].phase]
    images = [_pixels(im) for im in anim.images(frames=picked)]
    assert len(images) == len(picked) == 1 + len(phases) + 1 and images[0].shape == (324, 576, 3)   # 24x13.5 in (1920x1080 at 80 dpi)
    for a, b in zip(images, images[1:]):
        assert (a != b).any()


@pytest.mark.slow  # draws a demo's animation, frame by frame (seconds each)
@pytest.mark.parametrize("seed", sorted(SEED_STEPS))
def test_seed_training_animation_plots_the_recorded_run(demo_trace, seed):
    trace, anim = _seed_training(demo_trace, seed)
    r, S = anim.renderer, anim.renderer.surface
    run = [s.index for s in trace.steps if s.backward is not None]
    assert len(anim) == 4 and [r.step_of(i) for i in (0, 3)] == [run[0], run[-1]]
    assert f"{len(run)} steps shown in 4 frames" in anim.note
    assert S and S.exact == (seed == 5)   # two numbers to learn only in seed 5
    images = []
    for i, im in enumerate(anim.images()):
        step = trace.step(r.step_of(i))
        params = {n: step.value(trace.find(n).tid).data.double().numpy() for n in ("w", "b")}
        theta = np.concatenate([step.value(t).data.double().reshape(-1).numpy() for t in S.tids])
        # the loss curve ends at this step's loss; the path ends at this step's parameters
        xs, ys = r.loss_line.get_data()
        assert xs[-1] == step.index and ys[-1] == pytest.approx(step.loss, rel=1e-6)
        xs, ys = r.traj_line.get_data()
        np.testing.assert_allclose([xs[-1], ys[-1]], S.coords(theta), rtol=1e-6, atol=1e-9)
        # the data panel: the demo's own model at those parameters
        if seed == 5:                 # one feature: the data and the fitted line
            lx, ly = r.fit_line.get_data()
            np.testing.assert_allclose(ly, SEED_MODELS[seed](np.asarray(lx), params), rtol=1e-6)
        else:                         # more: predicted against true
            xy = r.pred_scatter.get_offsets()
            np.testing.assert_allclose(xy[:, 0], S.y.reshape(-1))
            np.testing.assert_allclose(xy[:, 1], SEED_MODELS[seed](S.X, params).reshape(-1),
                                       rtol=1e-6, atol=1e-9)
        images.append(_pixels(im))
    for a, b in zip(images, images[1:]):
        assert (a != b).any()


def test_seed_3_surface_is_the_least_squares_fit_of_the_crop_table(demo_trace):
    S = _seed_training(demo_trace, 3)[1].renderer.surface
    g = run_demo_plain("crop_yield")
    X, Y = g["inputs"].double().numpy(), g["targets"].double().numpy()
    assert sorted(map(tuple, S.X)) == sorted(map(tuple, X))         # all 15 regions, once each
    B, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), Y, rcond=None)
    w, b = B[:3].T, B[3]                                             # y = X @ w.t() + b
    np.testing.assert_allclose(S.optimum, np.concatenate([w.reshape(-1), b]), rtol=1e-6, atol=1e-6)
    assert "plane through the optimum" in S.description and S.axes.shape == (2, 8)


@pytest.mark.slow  # reads all 3,000 steps of gd_backprop to fit the surface
def test_seed_5_surface_is_the_full_batch_loss(demo_trace):
    trace, anim = _seed_training(demo_trace, 5)
    S = anim.renderer.surface
    np.testing.assert_allclose(S.optimum, [3.0, 0.8], atol=1e-4)     # y = 3x + 0.8, no noise
    w, b = trace.find("w").tid, trace.find("b").tid
    for step in (trace.step(0), trace.step(1500), trace.step(2999)):
        at = (step.value(w).data.item(), step.value(b).data.item())
        assert S.loss(*at) == pytest.approx(step.loss, rel=1e-5)    # every step sees all 50 points


def test_progress_is_a_callback(demo_trace, tmp_path):
    """Saving reports (done, total) per frame to the caller; render draws no bar of its own."""
    calls = []
    anim = animation_of_trace(demo_trace("linreg"), kind="training", frames=3, dpi=20)
    anim.save(tmp_path / "t.gif", progress=lambda done, total: calls.append((done, total)))
    n = len(anim)
    assert calls == [(i, n) for i in range(1, n + 1)]


# -- redrawing only what changed, one palette --------------------------------------------------
def _all_frames(anim, full: bool, monkeypatch) -> list[np.ndarray]:
    real = animate_mod._Redraw.__init__

    def init(self, fig):
        real(self, fig)
        self.full = full

    monkeypatch.setattr(animate_mod._Redraw, "__init__", init)
    frames = [_pixels(im) for im in anim.images(dpi=40)]
    monkeypatch.setattr(animate_mod._Redraw, "__init__", real)
    return frames


@pytest.mark.parametrize("demo", ["linreg",
                                  # every frame drawn twice (7 s); the fast tier has linreg's
                                  pytest.param("custom_function", marks=pytest.mark.slow)])
def test_redrawing_what_changed_gives_the_picture_of_drawing_everything(demo_trace, demo, monkeypatch):
    """Each frame drawn over the last where something changed equals the frame drawn whole (to
    a unit of one colour channel, on a handful of pixels an edge clips differently)."""
    anim = animation_of_trace(demo_trace(demo), kind="backprop", frames=12)
    kept = anim.renderer
    changed = _all_frames(anim, False, monkeypatch)
    assert kept.animated()                       # the renderer names its moving artists
    whole = _all_frames(animation_of_trace(demo_trace(demo), kind="backprop", frames=12), True,
                        monkeypatch)
    assert len(changed) == len(whole) == len(anim)
    for i, (a, b) in enumerate(zip(changed, whole)):
        diff = np.abs(a - b)
        assert diff.max() <= 3, (i, int(diff.max()))
        assert (diff.max(-1) > 0).mean() < 1e-3, i
    # and the frames do differ from each other: something was redrawn
    assert any((changed[i] != changed[i + 1]).any() for i in range(len(changed) - 1))


def test_shared_palette_maps_every_frame_onto_one(tmp_path):
    from PIL import Image

    colours = [(255, 255, 255), (0, 114, 178), (213, 94, 0), (0, 0, 0)]
    frames = []
    for k in range(3):
        im = Image.new("RGB", (40, 20), colours[0])
        im.paste(colours[1 + k], (5 * k, 0, 5 * k + 10, 10))
        frames.append(im.quantize(colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE))
    shared = animate_mod.shared_palette(frames)
    assert len({tuple(f.getpalette()) for f in shared}) == 1
    for before, after in zip(frames, shared):   # few colours: every pixel keeps its colour
        assert np.array_equal(np.asarray(before.convert("RGB")), np.asarray(after.convert("RGB")))
    # many colours: at most 256, each pixel the nearest of them
    rng = np.random.default_rng(0)
    many = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).quantize(colors=255)
            for _ in range(4)]
    out = animate_mod.shared_palette(many)
    assert len({tuple(f.getpalette()) for f in out}) == 1
    assert len(out[0].getpalette()) <= 3 * 256
    err = np.abs(np.asarray(out[0].convert("RGB"), dtype=int) - np.asarray(many[0].convert("RGB"), dtype=int))
    assert err.mean() < 40


def _colour_tables(data: bytes) -> tuple[int, set]:
    """(frames, every colour of every colour table) of a GIF file, by walking its blocks."""
    colours: set = set()

    def table(at: int, packed: int) -> int:
        n = 2 ** ((packed & 7) + 1)
        colours.update(data[at + 3 * i:at + 3 * i + 3] for i in range(n))
        return at + 3 * n

    at = table(13, data[10]) if data[10] & 0x80 else 13
    frames = 0
    while at < len(data) and data[at] != 0x3B:
        if data[at] == 0x21:                       # an extension: label, then sub-blocks
            at += 2
            while data[at]:
                at += data[at] + 1
            at += 1
        elif data[at] == 0x2C:                     # an image: descriptor, table, LZW data
            packed = data[at + 9]
            frames += 1
            at = table(at + 10, packed) if packed & 0x80 else at + 10
            at += 1                                # LZW minimum code size
            while data[at]:
                at += data[at] + 1
            at += 1
        else:
            raise AssertionError(f"unexpected GIF block {data[at]:#x} at {at}")
    return frames, colours


def test_gif_frames_take_their_colours_from_one_palette(zeroing, tmp_path):
    anim = animation_of_trace(zeroing, kind="backprop", dpi=DPI, frames=8)  # 8 frames, not 18
    path = anim.save(tmp_path / "b.gif")
    frames, colours = _colour_tables(path.read_bytes())
    assert frames == len(anim)
    assert len(colours) <= 256   # each frame's table is a part of the one palette
