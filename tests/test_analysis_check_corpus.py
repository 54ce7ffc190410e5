"""The checks on the corpus of tests/corpus: no false alarm, no miss (issue 12).

Every correct script passes every check at every step (and gets no finding); every
mutated twin is caught, naming the parameter and the step where the mistake first shows:
a wrong backward by a failed gradient check, a forgotten zero_grad by the
``forgot_zero_grad`` finding, an unused or frozen parameter by ``no_grad_received`` with
its line. Each is recorded in-process with ``gradtrace.trace()`` over a few steps.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys

import pytest

import corpus
from conftest import python_cmd
from corpus._twin import KINDS
from gradtrace.analysis.check import check_trace, numeric_check

SCRIPTS = {s.name: s for s in corpus.scripts()}
TWINS = corpus.twins()
GRADIENT = {"off_2pct", "off_2x", "sign_flip", "transposed", "dropped_term"}


def _record(name, twin=None, steps=None, **options):
    with contextlib.redirect_stdout(io.StringIO()):  # the scripts print like real ones
        return corpus.record(name, twin, steps, **options)


def test_the_corpus_is_large_and_every_twin_kind_is_there():
    assert len(SCRIPTS) >= 30
    assert {t.kind for t in TWINS} == set(KINDS)
    assert all(SCRIPTS[n].twins for n in SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_correct_script_passes_every_check_at_every_step(name):
    script = SCRIPTS[name]
    trace = _record(name)
    report = check_trace(trace, numeric="all")
    assert not report.failed, [str(c) for c in report.failed][:3]
    assert not report.findings, [str(f) for f in report.findings]
    assert report.exit_code(strict=True) == 0
    with_bw = {s.index for s in trace.steps if s.backward is not None}
    assert len(with_bw) == script.steps
    numeric = report.of("numeric")
    assert {c.step for c in numeric} == with_bw          # every step, not a sample
    if script.numeric is not None:                       # what no replay can do, said
        assert {c.status for c in numeric} == {"not_applicable"}
        assert all(script.numeric in c.detail for c in numeric), numeric[0].detail
        return
    assert {c.status for c in numeric} == {"pass"}, [str(c) for c in numeric][:2]
    for c in report.checks:
        if c.status == "pass":
            assert c.bound is not None and c.bound > 0 and c.max_rel_err <= c.tolerance, str(c)


@pytest.mark.parametrize("twin", TWINS, ids=[t.id for t in TWINS])
def test_a_twin_is_caught_naming_the_parameter_and_the_step(twin):
    report = check_trace(_record(twin.script, twin.kind), numeric="all")
    if twin.kind in GRADIENT:
        failed = report.failed
        named = {(c.step, c.param) for c in failed}
        assert (twin.step, twin.param) in named, (report.verdict(), sorted(named)[:6])
        assert {c.param for c in failed} <= twin.params, sorted(named)
        assert min(c.step for c in failed) == twin.step
        assert report.verdict().startswith(f"gradients WRONG at step {twin.step} (")
        assert report.exit_code() == 3
        return
    assert not report.failed, [str(c) for c in report.failed][:2]   # the gradients are right
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 3
    kind = "forgot_zero_grad" if twin.kind == "no_zero_grad" else "no_grad_received"
    found = [f for f in report.findings if f.kind == kind]
    assert (twin.step, twin.param) in {(f.step, f.param) for f in found}, \
        [str(f) for f in report.findings]
    assert {f.param for f in found} <= twin.params
    assert all(f.kind == kind for f in report.findings), [str(f) for f in report.findings]
    if kind == "forgot_zero_grad":
        assert min(f.step for f in found) == twin.step
        assert all(f.param in f.message and "zero_grad" in f.message for f in found)
    else:  # the line where the parameter was made, or where the optimizer was given it
        lines = SCRIPTS[twin.script].path.read_text().splitlines()
        marked = [i for i, s in enumerate(lines) if "the twin's finding names this line" in s] \
            or [i for i, s in enumerate(lines) if "unused by the twin" in s]
        line = 1 + marked[0]
        f = next(f for f in found if f.param == twin.param)
        assert f.source == f"{twin.script}.py:{line}", str(f)
        if twin.kind == "frozen_in_optimizer":
            assert "is passed to the optimizer" in f.message and "does not require grad" in f.message


def _smallest_caught(name, twin, deltas):
    """The smallest relative error of the backward the check catches at the first step."""
    corpus.module(name)
    factors = sys.modules["_twin"].FACTOR     # the module the scripts import
    caught = []
    for delta in deltas:
        old = factors[twin]
        factors[twin] = 1 + delta
        try:
            trace = _record(name, twin, steps=1)
        finally:
            factors[twin] = old
        if any(c.failed for c in numeric_check(trace.steps[0])):
            caught.append(delta)
    return min(caught) if caught else math.inf


@pytest.mark.slow  # a dozen twins recorded and checked, one per delta (30 s on 2 cores)
def test_the_smallest_backward_error_caught():
    """A backward off by 1 + delta (the off_2pct twin with a smaller delta), first step.
    float64: 1e-8 (the Legendre Function) and 1e-7 (the LayerNorm Function, 30 rows);
    float32: 3e-4 for the Legendre fit (its gradient adds up 2,000 terms) and 1e-5 for
    the d2l concise regression (20 rows)."""
    assert _smallest_caught("legendre_f64_optim", "off_2pct", [1e-7, 1e-8, 1e-9]) == 1e-8
    assert _smallest_caught("layernorm_function", "off_2pct", [1e-6, 1e-7, 3e-8]) == 1e-7
    assert _smallest_caught("legendre_f32", "off_2pct", [1e-3, 3e-4, 1e-4]) == 3e-4
    assert _smallest_caught("d2l_linreg_concise", "off_2pct", [1e-4, 1e-5, 1e-6]) == 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["legendre_f32", "poly_nn"])
def test_a_2000_step_run_never_fails_a_check(name):
    """The tutorials' own length: 2,000 steps, every step checked (numeric and, for the
    linear model, analytic): zero failed checks."""
    trace = _record(name, steps=2000, full=True)  # every step in full, whatever the budget
    report = check_trace(trace, numeric="all")
    numeric = report.of("numeric")
    assert len({c.step for c in numeric}) == 2000
    assert not report.failed and {c.status for c in numeric} == {"pass"}, report.verdict()
    assert not report.findings


def test_exactly_zero_gradients_are_checked_against_rounding_noise():
    """a and c of the Legendre fit (odd symmetry) and the bias before a BatchNorm (the batch
    mean removes it): autograd's float32 value is noise, the bound allows for it."""
    for name, params in (("legendre_f32", ("a", "c")), ("batchnorm_train", ("net.0.bias",))):
        results = {c.param: c for c in numeric_check(_record(name, steps=1).steps[0])}
        for p in params:
            c = results[p]
            assert c.passed and c.max_abs_err <= c.bound and c.max_rel_err > 1e-3, str(c)


@pytest.mark.slow  # python runs a corpus script, forked
def test_a_corpus_script_runs_as_a_plain_script(tmp_path):
    """The scripts are scripts: `python tests/corpus/x.py` runs them as they are."""
    r = python_cmd(str(SCRIPTS["d2l_linreg_scratch"].path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    w0, w1, b = (float(v.strip("[],")) for v in r.stdout.split())
    assert all(math.isfinite(v) for v in (w0, w1, b)) and b != 0
