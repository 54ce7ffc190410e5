"""The demos: each runs with plain python and under gradtrace, unchanged, and teaches its lesson."""

from __future__ import annotations

import json
import math
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import DEMOS, gradtrace_cmd, python_cmd, run_demo_plain

#: Every demo and the final parameters it leaves in its globals (name -> shape).
DEMO_PARAMS = {
    "linreg": {"w": (2, 1), "b": (1,)},
    "linreg_concise": {"net.0.weight": (1, 2), "net.0.bias": (1,)},
    "crop_yield": {"w": (2, 3), "b": (2,)},
    "gd_backprop": {"w": (1,), "b": (1,)},
    "softmax_regression": {"W": (2, 3), "b": (3,)},
    "forgot_zero_grad": {"w": (2, 1), "b": (1,)},
    "exploding_lr": {"model.weight": (2, 3), "model.bias": (2,)},
    "custom_function": {"w": (1,), "b": (1,)},
}
NAMES = sorted(DEMO_PARAMS)


def test_every_demo_is_listed_here_and_in_the_readme():
    on_disk = sorted(p.stem for p in DEMOS.glob("*.py"))
    assert on_disk == NAMES
    readme = (DEMOS / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}.py`" in readme, f"demos/README.md has no paragraph on {name}.py"


# -- running them ------------------------------------------------------------------------------

def _python(name: str, *args: str) -> subprocess.CompletedProcess:
    """`python demos/NAME.py ARGS` (forked from the warm test process)."""
    return python_cmd(DEMOS / f"{name}.py", *args)


@pytest.fixture(scope="session")
def plain_processes():
    """Every demo run by plain `python demos/NAME.py`, a few at a time, once per session."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(NAMES, pool.map(_python, NAMES)))


_PLAIN: dict = {}


@pytest.fixture(scope="session")
def recorded(recorded_demos):
    """recorded(name, *args) -> (Trace, globals) of the demo run under gradtrace.trace(),
    saved to a file that the `gradtrace check` tests read again (conftest's recorded_demos)."""

    def get(name: str, *args: str):
        return recorded_demos.trace(name, *args), recorded_demos.globals(name, *args)

    return get


@pytest.fixture(scope="session")
def plain():
    """plain(name, *args) -> the globals of the demo run in this process without gradtrace."""

    def get(name: str, *args: str):
        key = (name, args)
        if key not in _PLAIN:
            _PLAIN[key] = run_demo_plain(name, *args)
        return _PLAIN[key]

    return get


def final_params(g: dict) -> dict[str, torch.Tensor]:
    """The parameters a demo leaves in its globals: leaf tensors that require grad, and the
    parameters of its nn.Modules (named as gradtrace names them)."""
    out = {}
    for k, v in g.items():
        if isinstance(v, torch.Tensor) and v.requires_grad and v.is_leaf:
            out[k] = v.detach()
        elif isinstance(v, torch.nn.Module):
            for pname, p in v.named_parameters():
                out[f"{k}.{pname}"] = p.detach()
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so that torch.equal also compares NaNs (and -0.0) exactly."""
    return t.contiguous().flatten().view(torch.uint8)


@pytest.mark.slow  # every demo end to end, in its own (forked) process
@pytest.mark.parametrize("name", NAMES)
def test_runs_with_plain_python(plain_processes, name):
    p = plain_processes[name]
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip(), "every demo prints its progress"
    assert "Traceback" not in p.stderr and "Warning" not in p.stderr, p.stderr


@pytest.mark.parametrize("name", NAMES)
def test_recording_does_not_change_the_result(plain, recorded, name):
    """Final parameters are bit-identical with and without gradtrace (NaNs included)."""
    expected = final_params(plain(name))
    t, g = recorded(name)
    got = final_params(g)
    assert {k: tuple(v.shape) for k, v in expected.items()} == DEMO_PARAMS[name]
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(bits(got[k]), bits(expected[k])), f"{name}: {k} differs under gradtrace"
    assert t.info.status == "completed"


@pytest.mark.parametrize("name", NAMES)
def test_recorded_parameter_names(recorded, name):
    t, _ = recorded(name)
    assert {p.name: p.shape for p in t.params} == DEMO_PARAMS[name]


@pytest.mark.slow  # every demo end to end, in its own (forked) process
def test_gradtrace_run_of_a_diverging_script_exits_0_with_its_own_output(plain_processes, tmp_path):
    """Non-finite values are recorded, not fatal: the script's output and exit code stay its own."""
    p = gradtrace_cmd("run", str(DEMOS / "exploding_lr.py"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == plain_processes["exploding_lr"].stdout
    assert "loss nan" in p.stdout
    s = gradtrace_cmd("summary", "gradtrace-out/exploding_lr/trace.gtrace", cwd=tmp_path)
    assert s.returncode == 0 and "35 steps recorded" in s.stdout


# -- the lessons, as recorded ---------------------------------------------------------------

def _names(step, tids):
    return [step.name(t) for t in tids]


def _ops(step, name):
    return [o for o in step.ops if o.name == name]


def test_linreg_one_step_is_accumulate_update_zero(recorded):
    t, _ = recorded("linreg")
    s0, s1 = t.steps[0], t.steps[1]
    assert [_names(s0, o.inputs) for o in s0.graph_ops[:2]] == [["X", "w"], ["t2", "b"]]
    assert "y" in _names(s0, _ops(s0, "reshape")[0].inputs)
    acc = s0.accumulations
    assert sorted(s0.name(e.tensor) for e in acc) == ["b", "w"]
    assert all(e.fresh and e.idiom == "fresh" for e in acc)
    assert len(s0.updates) == 2 and len(s0.zeroings) == 2
    assert {e.idiom for e in s0.zeroings} == {"p.grad.zero_()"}
    # From the second step on, backward adds onto the zeros left by grad.zero_().
    assert {e.idiom for e in s1.accumulations} == {"added onto zeros"}
    assert sum(1 for s in t.step_rows() if s["has_backward"]) == 300  # 3 epochs of 100 batches


def test_linreg_gradient_is_of_the_sum_and_the_update_divides(recorded):
    """The d2l teaching point: backward of l.sum(); sgd divides by the batch size."""
    t, g = recorded("linreg")
    s = t.steps[0]
    X = s.value(s.graph_ops[0].inputs[0]).data
    y = s.value(_ops(s, "reshape")[0].inputs[0]).data
    w_ev = next(e for e in s.accumulations if s.name(e.tensor) == "w")
    upd = next(e for e in s.updates if s.name(e.tensor) == "w")
    w0 = upd.before.data
    b0 = next(e for e in s.updates if s.name(e.tensor) == "b").before.data
    residual = X @ w0 + b0 - y
    torch.testing.assert_close(w_ev.incoming.data, X.T @ residual)  # sum, not mean
    torch.testing.assert_close(upd.after.data, w0 - g["lr"] * w_ev.after.data / g["batch_size"])


def test_linreg_concise_zero_grad_sets_none_so_every_accumulation_is_fresh(recorded):
    t, _ = recorded("linreg_concise")
    s0, s1 = t.steps[0], t.steps[1]
    assert [o.name for o in s0.graph_ops] == ["linear", "mse_loss"]
    assert _names(s0, s0.graph_ops[0].inputs) == ["X", "net.0.weight", "net.0.bias"]
    assert [o.module for o in s0.graph_ops] == ["net.0", "loss"]
    # The in-place initialisation through .data shows up as updates before training.
    assert any("normal_" in e.idiom for e in s0.updates)
    assert any("fill_" in e.idiom for e in s0.updates)
    assert {e.idiom for e in s1.zeroings} == {"optimizer.zero_grad(set_to_none=True)"}
    assert all(e.fresh for s in t.steps[:50] for e in s.accumulations)
    assert {e.idiom for e in s1.updates} == {"SGD.step()"}


def test_crop_yield_two_outputs_and_unscaled_features(recorded):
    t, _ = recorded("crop_yield")
    s = t.steps[0]
    assert [o.name for o in s.graph_ops] == ["t", "matmul", "add", "sub", "mul", "sum", "div"]
    assert s.value(s.graph_ops[1].inputs[0]).data.shape == (3, 3)  # a minibatch of 3 regions
    assert s.value(s.graph_ops[1].inputs[0]).data.min() >= 36      # features never scaled
    assert sum(1 for r in t.step_rows() if r["has_backward"]) == 250  # 50 epochs of 5 batches
    assert {e.idiom for e in s.updates} == {"p.sub_() (no_grad)"}
    assert len(s.zeroings) == 2


def test_gd_backprop_updates_through_data(recorded):
    t, _ = recorded("gd_backprop")
    s0, s1 = t.steps[0], t.steps[1]
    assert _names(s0, s0.graph_ops[0].inputs) == ["x", "w"]
    assert len(s0.zeroings) == 0  # w.grad is None before the first backward
    assert {e.idiom for e in s1.zeroings} == {"p.grad.data.zero_()"}
    assert {e.idiom for e in s1.updates} == {"p.data.sub_()"}
    assert sum(1 for r in t.step_rows() if r["has_backward"]) == 3000


def test_softmax_regression_graph_has_cross_entropy(recorded):
    t, g = recorded("softmax_regression")
    s = t.steps[0]
    assert [o.name for o in s.graph_ops] == ["matmul", "add", "cross_entropy"]
    assert _names(s, s.graph_ops[2].inputs)[1] == "y"
    assert {n.name for n in s.backward.nodes} >= {"NllLossBackward0", "LogSoftmaxBackward0"}
    # The recorded gradient is the textbook one: dL/dO = (softmax(O) - onehot(y)) / n.
    X = s.value(s.graph_ops[0].inputs[0]).data
    y = s.value(s.graph_ops[2].inputs[1]).data
    W0 = next(e for e in s.updates if s.name(e.tensor) == "W").before.data
    b0 = next(e for e in s.updates if s.name(e.tensor) == "b").before.data
    dO = (torch.softmax(X @ W0 + b0, dim=1) - torch.nn.functional.one_hot(y, 3)) / len(y)
    dW = next(e for e in s.accumulations if s.name(e.tensor) == "W").incoming.data
    db = next(e for e in s.accumulations if s.name(e.tensor) == "b").incoming.data
    torch.testing.assert_close(dW, X.T @ dO)
    torch.testing.assert_close(db, dO.sum(0))
    assert sum(1 for r in t.step_rows() if r["has_backward"]) == 45  # 3 epochs of 15 batches


def test_softmax_by_hand_is_the_same_gradient_through_more_ops(recorded):
    fused, _ = recorded("softmax_regression")
    hand, _ = recorded("softmax_regression", "--by-hand")
    sf, sh = fused.steps[0], hand.steps[0]
    assert {"exp", "sum", "div", "log", "mean", "neg"} <= {o.name for o in sh.graph_ops}
    assert "cross_entropy" not in {o.name for o in sh.graph_ops}
    for name in ("W", "b"):
        gf = next(e for e in sf.accumulations if sf.name(e.tensor) == name).incoming.data
        gh = next(e for e in sh.accumulations if sh.name(e.tensor) == name).incoming.data
        torch.testing.assert_close(gh, gf)


def test_forgot_zero_grad_adds_onto_the_previous_gradient(recorded):
    t, _ = recorded("forgot_zero_grad")
    s0, s1 = t.steps[0], t.steps[1]
    assert all(r["zeroings"] == 0 for r in t.step_rows())
    assert {e.idiom for e in s0.accumulations} == {"fresh"}
    assert {e.idiom for e in s1.accumulations} == {"added"}  # not "added onto zeros"
    assert len(s0.updates) == 2  # ... although the parameters were updated in between
    for e1 in s1.accumulations:
        e0 = next(e for e in s0.accumulations if e.tensor == e1.tensor)
        assert torch.equal(e1.before.data, e0.after.data)  # step 0's gradient is still there
        torch.testing.assert_close(e1.after.data, e1.before.data + e1.incoming.data)


def test_forgot_zero_grad_fixed_and_what_the_bug_costs(recorded):
    t, g_bug = recorded("forgot_zero_grad")
    fixed, g_fixed = recorded("forgot_zero_grad", "--fixed")
    s1 = fixed.steps[1]
    assert {e.idiom for e in s1.accumulations} == {"added onto zeros"}
    assert len(s1.zeroings) == 2
    assert float(g_bug["train_l"].mean()) > 100 * float(g_fixed["train_l"].mean())


def test_exploding_lr_loss_overflows_then_nan(recorded):
    t, _ = recorded("exploding_lr")
    losses = [s.loss for s in t.steps]
    assert len(losses) == 35
    assert all(math.isfinite(x) for x in losses[:14])
    assert all(b > 100 * a for a, b in zip(losses[:13], losses[1:14]))  # x100 per step
    assert losses[14] == math.inf
    assert all(math.isnan(x) for x in losses[31:])


def test_exploding_lr_first_non_finite_value_is_the_loss_at_step_14(recorded):
    t, _ = recorded("exploding_lr")
    first = next((s.index, o.name) for s in t.steps for o in s.graph_ops
                 if not s.value(o.outputs[0]).stats.finite)
    assert first == (14, "mse_loss")


def test_exploding_lr_below_the_bound_stays_finite(recorded):
    t, _ = recorded("exploding_lr", "--lr", "1e-4")
    losses = [s.loss for s in t.steps]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] / 10


def _square(step):
    (op,) = _ops(step, "Square")
    (node,) = [n for n in step.backward.nodes if n.name == "SquareBackward"]
    return op, node


@pytest.mark.parametrize("fixed", [False, True])
def test_custom_function_is_one_op_named_after_its_class(recorded, fixed):
    t, _ = recorded("custom_function", *(["--fixed"] if fixed else []))
    s = t.steps[0]
    op, node = _square(s)
    assert op.target == "autograd.Function:Square" and op.is_graph
    assert op.grad_fn == "SquareBackward" and node.op == op.index
    assert [o.name for o in s.ops if o.parent == op.index] == ["mul"]  # its forward's x * x
    assert op.source.short.startswith("custom_function.py:")
    # The backward mistake, visible in the recorded gradients: x * g instead of 2 * x * g.
    x = s.value(op.inputs[0]).data
    g_out, g_in = node.grad_outputs[0].data, node.grad_inputs[0].data
    torch.testing.assert_close(g_in, (2 if fixed else 1) * x * g_out)


# -- what `gradtrace check` says about each demo (issue 3) ----------------------------------

def _check_json(trace_path) -> dict:
    from click.testing import CliRunner

    from gradtrace.cli import cli

    result = CliRunner().invoke(cli, ["check", str(trace_path), "--json"])
    doc = json.loads(result.output)
    failed = any(c["status"] == "fail" for c in doc["checks"])
    assert result.exit_code == (3 if failed else 0), result.output
    return doc


@pytest.fixture(scope="session")
def checked(recorded_demos):
    """checked(name, *args) -> the `gradtrace check --json` document of the demo's trace."""
    from gradtrace.cli import cli

    assert "check" in cli.commands, "`gradtrace check` is missing from the command line (issue 3)"
    cache: dict = {}

    def get(name: str, *args: str) -> dict:
        key = (name, args)
        if key not in cache:
            cache[key] = _check_json(recorded_demos.path(name, *args))
        return cache[key]

    return get


@pytest.mark.slow  # every step of each demo checked again through `gradtrace check --json`;
# test_analysis_check checks the same steps in-process in the fast tier
@pytest.mark.parametrize("name, args", [("linreg", ()), ("linreg_concise", ()), ("crop_yield", ()),
                                        ("gd_backprop", ()),
                                        ("softmax_regression", ()),
                                        ("softmax_regression", ("--by-hand",))])
def test_check_analytic_gradients_pass(checked, name, args):
    doc = checked(name, *args)
    analytic = [c for c in doc["checks"] if c["kind"].startswith("analytic_")]
    assert analytic, f"{name}: no analytic check applied"
    assert all(c["status"] == "pass" for c in analytic), [c for c in analytic if c["status"] != "pass"]
    assert not any(c["status"] == "fail" for c in doc["checks"])


def test_check_finds_forgot_zero_grad_at_the_second_step(checked):
    found = [f for f in checked("forgot_zero_grad")["findings"] if f["kind"] == "forgot_zero_grad"]
    assert {f["param"] for f in found if f["step"] == 1} == {"w", "b"}
    assert min(f["step"] for f in found) == 1
    assert not [f for f in checked("forgot_zero_grad", "--fixed")["findings"]
                if f["kind"] == "forgot_zero_grad"]


def test_check_finds_the_unstable_lr_and_the_first_non_finite_op(checked):
    findings = checked("exploding_lr")["findings"]
    assert any(f["kind"] == "lr_unstable" for f in findings)
    non_finite = [f for f in findings if f["kind"] == "non_finite"]
    assert non_finite and non_finite[0]["step"] == 14
    assert "mse_loss" in json.dumps(non_finite[0])
    below = checked("exploding_lr", "--lr", "1e-4")["findings"]
    assert not [f for f in below if f["kind"] in ("lr_unstable", "non_finite")]


def test_check_numeric_names_the_custom_function(checked):
    bad = [c for c in checked("custom_function")["checks"]
           if c["kind"] == "numeric" and c["status"] == "fail"]
    assert bad and "Square" in json.dumps(bad)
    assert not [c for c in checked("custom_function", "--fixed")["checks"]
                if c["kind"] == "numeric" and c["status"] == "fail"]


# -- every demo under the real `gradtrace run` command (issue 6) -----------------------------

_ERR = (r"\(max rel err (?P<err>[0-9.]+(?:e[+-]\d+)?)"
        r"(?:, largest error [0-9.]+(?:e[+-]\d+)? of its bound)?\)")

#: (demo, script args) -> (the `gradtrace: check:` verdict, a regular expression; what else
#: gradtrace's stderr says). The analytic counts are parameters x steps with a backward pass.
RUN_OUTCOMES = {
    ("linreg", ()): (rf"gradients ok: analytic_mse 600 passed {_ERR}; .*; 0 findings", []),
    ("linreg_concise", ()): (rf"gradients ok: analytic_mse 600 passed {_ERR}; .*; 0 findings", []),
    ("crop_yield", ()): (rf"gradients ok: analytic_mse 500 passed {_ERR}; .*; "
                         r"1 finding \(ill_conditioned\)", ["features (mean±std per column"]),
    # 3,001 steps in full, 1,000 of them checked (--max-steps): 999 with a backward pass each
    ("gd_backprop", ()): (rf"gradients ok: analytic_mse 1998 passed {_ERR}; .*; "
                          r"2 findings \(data_update\) \(checked 1000 of 3001 steps: .*\)",
                          ["gradtrace: figure saved: "]),
    ("softmax_regression", ()): (rf"gradients ok: analytic_softmax 90 passed {_ERR}; .*; 0 findings",
                                 []),
    ("softmax_regression", ("--by-hand",)): (
        rf"gradients ok: analytic_softmax 90 passed {_ERR}; .*; 0 findings", []),
    ("forgot_zero_grad", ()): (
        rf"gradients ok: analytic_mse 400 passed {_ERR}; .*; 2 findings \(forgot_zero_grad\)",
        ["gradtrace:   forgot_zero_grad (step 1, forgot_zero_grad.py:", "added w's gradient onto",
         "added b's gradient onto"]),
    ("exploding_lr", ()): (
        r"gradients ok: analytic_mse 58 passed, 12 not applicable .*; "
        r"3 findings \(non_finite, lr_unstable, ill_conditioned\)",
        ["gradtrace:   lr_unstable (step 0, exploding_lr.py:", "gradtrace:   non_finite (step 14, "
         "exploding_lr.py:51): first non-finite value: mse_loss"]),
    ("custom_function", ()): (
        r"gradients WRONG at step 0 \(w\): analytic_mse 0 passed, 200 not applicable; "
        r"numeric 0 passed, \d+ FAILED \(max rel err 0.5\); 0 findings",
        ["gradtrace:   FAIL numeric step 0 w: ", "wrong backward: autograd.Function:Square"]),
    ("custom_function", ("--fixed",)): (
        r"gradients ok: analytic_mse 0 passed, 200 not applicable; numeric \d+ passed .*; 0 findings",
        []),
}


@pytest.fixture(scope="session")
def gradtrace_runs(tmp_path_factory, plain_processes):
    """Every demo run by `gradtrace run --no-animate --no-report -o DIR/trace.gtrace
    demos/NAME.py ARGS` (no GIFs and no report: the check is what is asserted, and CI has 2
    cores), two at a time, once per session: {(name, args): (the run, the trace folder,
    plain python's stdout)}."""
    folder = tmp_path_factory.mktemp("gradtrace-run")

    def run(key):
        name, args = key
        out = folder / (name + "".join(args))
        r = gradtrace_cmd("run", "--no-animate", "--no-report", "-o", str(out / "trace.gtrace"),
                          str(DEMOS / f"{name}.py"), *args, cwd=folder)
        plain = _python(name, *args).stdout if args else plain_processes[name].stdout
        return r, out, plain

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(RUN_OUTCOMES, pool.map(run, RUN_OUTCOMES)))


@pytest.mark.slow  # every demo end to end, in its own (forked) process
@pytest.mark.parametrize("name,args,code,strict_code", [
    ("custom_function", (), 3, 3),            # its backward is wrong: the numeric check fails
    ("custom_function", ("--fixed",), 0, 0),
    ("linreg", (), 0, 0),
    ("forgot_zero_grad", (), 0, 3),           # findings, no failed check: only --strict fails
], ids=["custom_function", "custom_function--fixed", "linreg", "forgot_zero_grad"])
def test_gradtrace_check_exit_codes(gradtrace_runs, name, args, code, strict_code):
    """`gradtrace check` on the trace `gradtrace run` wrote: 0 all passed, 3 a check failed
    (under --strict also a finding)."""
    _, out, _ = gradtrace_runs[(name, args)]
    trace = str(out / "trace.gtrace")
    r = gradtrace_cmd("check", trace)
    assert r.returncode == code, r.stdout + r.stderr
    assert r.stdout.startswith("gradients WRONG" if code else "gradients ok"), r.stdout
    r = gradtrace_cmd("check", trace, "--strict")
    assert r.returncode == strict_code, r.stdout + r.stderr


def test_every_demo_runs_under_gradtrace_run():
    assert {name for name, _ in RUN_OUTCOMES} == set(NAMES)


@pytest.mark.slow  # every demo end to end, in its own (forked) process
@pytest.mark.parametrize("name,args", list(RUN_OUTCOMES),
                         ids=[name + "".join(args) for name, args in RUN_OUTCOMES])
def test_gradtrace_run_checks_each_demo(gradtrace_runs, name, args):
    r, out, plain = gradtrace_runs[(name, args)]
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain and r.stdout.strip()     # the script's own output, unchanged
    lines = r.stderr.splitlines()
    assert all(ln.startswith("gradtrace: ") for ln in lines), r.stderr
    [verdict] = [ln for ln in lines if ln.startswith("gradtrace: check: ")]
    pattern, needles = RUN_OUTCOMES[(name, args)]
    m = re.fullmatch(pattern, verdict[len("gradtrace: check: "):])
    assert m, verdict
    if "err" in m.groupdict():                        # every step, at float32 rounding
        assert float(m["err"]) <= 1e-5
    for needle in needles:
        assert needle in r.stderr
    assert (out / "trace.gtrace").is_file() and (out / "graph.svg").is_file()
    assert not (out / "report.html").exists() and not list(out.glob("*.gif"))

