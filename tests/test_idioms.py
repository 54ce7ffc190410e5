"""Real-code idioms run unchanged: each script in tests/idioms/ runs under python and under
`gradtrace run`, and the two runs must agree — stdout, exit status, final parameters bit for
bit — while the trace loads and each animation either renders or is skipped with one line.

The scripts are written for these tests, in the idioms of the PyTorch tutorials, d2l 1.0 and
lecture notes: lazy modules, updates through views, torch.func, torch.compile, a 50,000-op
chain, training in a thread, a d2l-style Module/Trainer, a bias-free model, one 2-number
parameter, a parameter above --max-numel, Chinese and `$...$` comments.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import gradtrace_cmd, python_cmd

IDIOMS = Path(__file__).resolve().parent / "idioms"
SCRIPTS = sorted(p.stem for p in IDIOMS.glob("[a-z]*.py"))

pytestmark = pytest.mark.slow


def _env(params: Path) -> dict:
    return dict(os.environ, IDIOM_PARAMS=str(params))


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """name -> (python's CompletedProcess, gradtrace's, folder); each script run once, both
    ways in a child forked from the warm test process (tests/runner.py: a user's process
    without paying torch's import twice per script)."""
    done: dict[str, tuple] = {}

    def get(name: str):
        if name not in done:
            folder = tmp_path_factory.mktemp(name)
            script = str(IDIOMS / f"{name}.py")
            plain = python_cmd(script, cwd=folder, env=_env(folder / "python.pt"), timeout=600)
            traced = gradtrace_cmd("run", "--animate", "-o", str(folder / "trace.gtrace"), script, cwd=folder,
                                   env=_env(folder / "gradtrace.pt"), timeout=600)
            done[name] = (plain, traced, folder)
        return done[name]

    return get


def test_the_corpus_covers_the_idioms():
    assert {"lazy_linear", "view_update", "func_per_sample", "compiled", "deep_chain",
            "threaded", "d2l_trainer", "bias_free", "one_pair", "big_param",
            "cjk_comments"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_same_output_and_exit_status(both_ways, name):
    plain, traced, _ = both_ways(name)
    assert plain.returncode == 0, plain.stderr
    assert traced.returncode == plain.returncode, traced.stderr[-3000:]
    assert traced.stdout == plain.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_final_parameters_are_bit_identical(both_ways, name):
    _, traced, folder = both_ways(name)
    a = torch.load(folder / "python.pt")
    b = torch.load(folder / "gradtrace.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", SCRIPTS)
def test_trace_loads_and_nothing_is_a_gradtrace_bug(both_ways, name):
    import gradtrace

    _, traced, folder = both_ways(name)
    err = traced.stderr
    assert "a gradtrace bug" not in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "Glyph" not in err and "missing from font" not in err, err[-3000:]
    t = gradtrace.load(folder / "trace.gtrace")
    assert t.info.status == "completed"
    t.close()


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("kind", ["backprop", "training"])
def test_each_animation_renders_or_is_skipped_with_one_line(both_ways, name, kind):
    _, traced, folder = both_ways(name)
    gif = folder / f"{kind}.gif"  # -o trace.gtrace: the outputs are backprop.gif, training.gif
    if gif.exists():
        assert gif.stat().st_size > 1000
        return
    said = [line for line in traced.stderr.splitlines()
            if "skipped" in line and (kind in line or line.startswith("gradtrace: animations skipped"))]
    assert len(said) == 1, traced.stderr[-3000:]


@pytest.mark.parametrize("name, territory", [("threaded", "thread"),
                                             ("func_per_sample", "torch.func"),
                                             ("compiled", "compile")])
def test_what_was_not_recorded_is_said(both_ways, name, territory):
    """Unknown territory is recorded, or named in one line at the end — never dropped silently."""
    import gradtrace

    _, traced, folder = both_ways(name)
    t = gradtrace.load(folder / "trace.gtrace")
    backward_passes = sum(1 for s in t.steps if s.backward is not None)
    t.close()
    said = [line for line in traced.stderr.splitlines() if territory in line
            and not line.startswith("gradtrace: check: ")]  # (which names the script's lines)
    if name == "threaded":  # threads may be recorded; otherwise they must be named
        assert backward_passes > 0 or said, traced.stderr[-2000:]
    else:  # transformed and compiled code is not recorded op by op: say so, in one line
        assert len(said) == 1, traced.stderr[-2000:]


def test_a_compiled_modules_parameters_are_named_by_the_scripts_module(both_ways):
    """torch.compile(model) wraps model in an OptimizedModule: the parameters are the
    script's model.0.weight, not the wrapper's cmodel._orig_mod.0.weight."""
    import gradtrace

    _, _, folder = both_ways("compiled")
    t = gradtrace.load(folder / "trace.gtrace")
    names = {t.name(e.tensor) for s in t.steps for e in s.events if e.kind == "accumulate"}
    t.close()
    assert names == {"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"}
