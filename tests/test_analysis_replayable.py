"""analysis.replayable and the replay's argument checks: a stranger's trace never calls what it names."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis import replayable as rt
from gradtrace.record.recorder import _target_of
from gradtrace.tracefile.dtypes import DTYPES, dtype_from_name
from gradtrace.tracefile.store import dtype_name


N_STEPS = 12

# What a crafted file may name instead of a graph op, with arguments that would leave a
# marker file behind if anything called them (``{m}``: the marker's path).
DANGEROUS = [
    ("torch.os.system", ["touch {m}"]),
    ("torch.os.mkdir", ["{m}"]),
    ("torch.save", ["$t0", "{m}"]),
    ("torch.load", ["{m}"]),
    ("torch.serialization.load", ["{m}"]),
    ("torch.from_file", ["{m}", True, 8]),
    ("Tensor.__reduce_ex__", ["$t0", 2]),
    ("torch.hub.load", ["{m}", "model"]),
    ("torch.ops.aten.__getattr__", ["{m}"]),
    ("builtins.eval", ["open('{m}', 'w')"]),
    ("torch._C._nn.__class__.__subclasses__", []),
    ("torch.nn.functional.os.system", ["touch {m}"]),
]
# Targets that are not text at all: the reader refuses the step before anything could run.
NOT_TEXT = [(5, ["$t0", "{m}"]), (["torch", "save"], ["$t0", "{m}"]), (None, ["{m}"])]


def _fit_steps(n: int):
    """Linear regression under F.mse_loss: per step the graph ops matmul, add, mse_loss."""
    torch.manual_seed(0)
    X = torch.randn(8, 2)
    Y = X @ torch.tensor([[2.0], [-1.0]]) + 0.5
    w = torch.zeros(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    for _ in range(n):
        F.mse_loss(X @ w + b, Y).backward()
        with torch.no_grad():
            for p in (w, b):
                p -= 0.1 * p.grad
                p.grad = None


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "fit.gtrace"
    with gradtrace.trace(path):
        _fit_steps(N_STEPS)
    return path


def _edit(path, edits: dict[int, dict]) -> None:
    """Rewrite ops in the file: {step: {"op": name, field: value...}} sets the fields of that
    step's first graph op of that name (fields: target, args, kwargs)."""
    fields = {"target": 3, "args": 6, "kwargs": 7}
    with sqlite3.connect(path) as c:
        for idx, edit in edits.items():
            body = json.loads(c.execute("SELECT body FROM step WHERE idx = ?", (idx,)).fetchone()[0])
            row = next(r for r in body["ops"] if r[2] == edit["op"] and r[11])
            for k, v in edit.items():
                if k != "op":
                    row[fields[k]] = v
            c.execute("UPDATE step SET body = ? WHERE idx = ?", (json.dumps(body), idx))


def _crafted(fit_file, tmp_path, edits):
    p = tmp_path / "crafted.gtrace"
    shutil.copy(fit_file, p)
    _edit(p, edits)
    return p


def _with_marker(args, marker) -> list:
    return [a.replace("{m}", str(marker)) if isinstance(a, str) else a for a in args]


def _numeric_by_step(report) -> dict[int, list]:
    out: dict[int, list] = {}
    for c in report.of("numeric"):
        out.setdefault(c.step, []).append(c)
    return out


def test_the_untouched_file_passes_the_numeric_check(fit_file):
    by_step = _numeric_by_step(gradtrace.load(fit_file).check(numeric="all"))
    assert sorted(by_step) == list(range(N_STEPS))
    assert all([c.status for c in cs] == ["pass", "pass"] for cs in by_step.values())


@pytest.mark.parametrize("target, args", DANGEROUS, ids=[str(t) for t, _ in DANGEROUS])
def test_a_dangerous_target_is_not_called_and_the_step_is_not_applicable(fit_file, tmp_path,
                                                                         target, args):
    marker = tmp_path / "pwned"
    p = _crafted(fit_file, tmp_path, {0: {"op": "matmul", "target": target,
                                          "args": _with_marker(args, marker)}})
    report = gradtrace.load(p).check(numeric="all")
    assert not marker.exists()
    by_step = _numeric_by_step(report)
    (na,) = by_step[0]
    assert na.status == "not_applicable" and na.param is None
    assert f"{target} is not an op gradtrace replays" in na.detail
    # the other steps are checked as before, and the verdict counts step 0 as not applicable
    assert all(c.status == "pass" for s in range(1, N_STEPS) for c in by_step[s])
    assert "numeric 22 passed, 1 not applicable" in report.verdict()


@pytest.mark.parametrize("target, args", NOT_TEXT, ids=[str(t) for t, _ in NOT_TEXT])
def test_a_target_that_is_not_text_is_a_corrupt_step(fit_file, tmp_path, target, args):
    marker = tmp_path / "pwned"
    p = _crafted(fit_file, tmp_path, {0: {"op": "matmul", "target": target,
                                          "args": _with_marker(args, marker)}})
    with pytest.raises(gradtrace.TraceFileError, match="step 0 is corrupt: op .*'s target is"):
        gradtrace.load(p).check(numeric="all")
    assert not marker.exists()


def _check_command(*args: str):
    """`gradtrace check ARGS` in this process (click's runner): the replay is what is tested."""
    from click.testing import CliRunner

    from gradtrace.cli import cli

    return CliRunner().invoke(cli, ["check", *args])


def test_gradtrace_check_of_a_crafted_file_calls_nothing(fit_file, tmp_path, monkeypatch):
    # every step gets one: on its matmul, and once those run out, on the loss of a step
    markers = [tmp_path / f"pwned{i}" for i in range(len(DANGEROUS))]
    p = _crafted(fit_file, tmp_path, {})
    for i, ((target, args), m) in enumerate(zip(DANGEROUS, markers)):
        op = "matmul" if i < N_STEPS else "mse_loss"
        _edit(p, {i % N_STEPS: {"op": op, "target": target, "args": _with_marker(args, m)}})
    monkeypatch.chdir(tmp_path)
    r = _check_command("--numeric", "--json", str(p))
    assert r.exit_code == 0 and r.exception is None, r.output
    assert not any(m.exists() for m in markers)
    assert list(tmp_path.iterdir()) == [p]
    numeric = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "numeric"]
    assert len(numeric) == N_STEPS
    assert all(c["status"] == "not_applicable" and "is not an op gradtrace replays" in c["detail"]
               for c in numeric)
    # as text too: nothing passed, and no traceback
    r = _check_command("--numeric", str(p))
    assert r.exit_code == 0 and r.exception is None and "Traceback" not in r.stderr
    assert "numeric 0 passed, 12 not applicable" in r.stdout
    assert not any(m.exists() for m in markers)


BAD_ARGUMENTS = [
    ("a free string in place of a tensor", {"op": "matmul", "args": ["$t0", "torch.os.system"]},
     "Tensor.matmul was given argument 1 'torch.os.system', a string gradtrace does not pass on"),
    ("reduction outside its values", {"op": "mse_loss", "kwargs": {"reduction": "os.system"}},
     "torch.nn.functional.mse_loss was given reduction='os.system', a string gradtrace does not"),
    ("a string for a keyword that takes none", {"op": "mse_loss", "kwargs": {"weight": "{m}"}},
     "was given weight="),
    ("a string inside a list", {"op": "matmul", "args": ["$t0", ["{m}"]]},
     "Tensor.matmul was given "),
    ("a dtype outside the allow-list", {"op": "mse_loss",
                                        "kwargs": {"reduction": "mean", "dtype": {"dtype": "os"}}},
     "dtype 'os', which is not a dtype gradtrace knows"),
    ("a dtype that is not a name", {"op": "mse_loss", "kwargs": {"dtype": {"dtype": ["float64"]}}},
     None),
    ("text that is not a range", {"op": "matmul", "args": ["$t0", {"repr": "os.system('x')"}]},
     "an argument gradtrace kept only as text"),
    ("a dict", {"op": "matmul", "args": ["$t0", {"dict": {"a": 1}}]},
     "an argument gradtrace does not replay"),
    ("a tensor id that is a string", {"op": "matmul", "args": ["$t0", {"tensor": "1"}]}, None),
    ("a tensor reference with extra keys", {"op": "matmul", "args": ["$t0", {"tensor": 1, "x": 2}]},
     None),
]


@pytest.mark.parametrize("edit, why", [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS])
def test_an_argument_outside_the_checks_makes_the_step_not_replayable(fit_file, tmp_path, edit, why):
    marker = tmp_path / "pwned"
    edit = json.loads(json.dumps(edit).replace("{m}", str(marker)))
    p = _crafted(fit_file, tmp_path, {0: edit})
    if why is None:  # a form the recorder never writes: the reader refuses the step itself
        with pytest.raises(gradtrace.TraceFileError, match="step 0 is corrupt: op .* does not write"):
            gradtrace.load(p).check(numeric="all")
        assert not marker.exists()
        return
    by_step = _numeric_by_step(gradtrace.load(p).check(numeric="all"))
    (na,) = by_step[0]
    assert na.status == "not_applicable" and why in na.detail
    assert all(c.status == "pass" for c in by_step[1])
    assert not marker.exists()


def test_an_allowed_string_is_passed_on(fit_file, tmp_path):
    # reduction='sum' is one of the strings mse_loss takes: the step replays, and since the
    # file now claims a loss n times larger than the one autograd differentiated, it fails
    p = _crafted(fit_file, tmp_path, {0: {"op": "mse_loss", "kwargs": {"reduction": "sum"}}})
    by_step = _numeric_by_step(gradtrace.load(p).check(numeric="all", analytic=False))
    assert [c.status for c in by_step[0]] == ["fail", "fail"]
    assert "autograd's gradient is 0.125 x the finite differences" in by_step[0][0].detail


def test_a_random_op_under_a_harmless_name_is_refused(fit_file, tmp_path):
    # the name is the file's, so the refusal goes by the function that would run
    p = _crafted(fit_file, tmp_path, {0: {"op": "mse_loss", "target": "torch.nn.functional.dropout",
                                          "kwargs": {"p": 0.5, "training": True}}})
    (na,) = _numeric_by_step(gradtrace.load(p).check(numeric="all"))[0]
    assert na.status == "not_applicable" and "the step draws random numbers (dropout" in na.detail


# -- the tables -------------------------------------------------------------------------------

def test_every_entry_is_a_callable_of_torch():
    assert len(rt.REPLAYABLE) > 500
    for target, fn in [*rt.REPLAYABLE.items(), *rt.BOOLEAN_DISPATCH.items()]:
        assert callable(fn), target
        assert (getattr(fn, "__module__", None) or "torch").startswith("torch"), target


# The recorder names these by another function that computes the same thing.
_RECORDED_AS = {"Tensor.__pow__": "Tensor.pow", "Tensor.__ipow__": "Tensor.pow_"}


def test_what_the_recorder_names_a_table_function_replays_it():
    casts = {"Tensor.float", "Tensor.half", "Tensor.bfloat16"}
    for target, fn in [*rt.REPLAYABLE.items(), *rt.BOOLEAN_DISPATCH.items()]:
        if target in casts:
            continue
        name, recorded = _target_of(fn)
        assert recorded == _RECORDED_AS.get(target, recorded)
        got = rt.replayable(recorded, name)
        assert got is fn or target in _RECORDED_AS, (target, recorded)


def test_the_table_holds_nothing_that_reaches_outside_the_tensors():
    names = {getattr(fn, "__name__", "") for fn in rt.REPLAYABLE.values()}
    for bad in ("save", "load", "system", "eval", "exec", "from_file", "as_strided", "set_",
                "__reduce_ex__", "__setstate__", "storage", "untyped_storage", "numpy", "tolist",
                "apply_", "map_", "register_hook", "backward", "resize_", "empty", "rand", "randn",
                "bernoulli", "normal_", "uniform_", "rrelu", "__getattr__", "__class__"):
        assert bad not in names
    assert not any(k.startswith(("torch.os", "torch.hub", "torch.serialization", "builtins"))
                   for k in rt.REPLAYABLE)


def test_unknown_and_non_string_targets_are_not_replayable():
    assert rt.replayable("torch.matmul", "matmul") is torch.matmul
    assert rt.replayable("Tensor.T.__get__", "T") is not None
    assert rt.replayable("Tensor.float", "float") is torch.Tensor.double
    for target in ("torch.os.system", "torch.load", "torch.matmul.__call__", "torch", "Tensor",
                   "", 5, None, ["torch", "save"], {"a": 1}):
        assert rt.replayable(target, "matmul") is None
    # the one target the op's name disambiguates: only among the functions listed for it
    assert _target_of(F.max_pool2d) == ("max_pool2d", rt.BOOLEAN_DISPATCH_TARGET)
    assert rt.replayable(rt.BOOLEAN_DISPATCH_TARGET, "max_pool2d") is F.max_pool2d
    for name in ("system", "load", "__class__", 5, None):
        assert rt.replayable(rt.BOOLEAN_DISPATCH_TARGET, name) is None


def test_strings_only_where_a_function_takes_one():
    assert rt.string_kind("torch.nn.functional.mse_loss", "reduction") == "reduction"
    assert rt.accepts("reduction", "sum") and not rt.accepts("reduction", "os.system")
    assert rt.string_kind("torch.functional.einsum", 0) == "equation"
    assert rt.accepts("equation", "bij,bjk->bik") and rt.accepts("equation", "...ij,...jk")
    assert not rt.accepts("equation", "__import__('os')") and not rt.accepts("equation", "a" * 500)
    assert rt.string_kind("torch.conv2d", 4) == "padding" and rt.accepts("padding", "same")
    assert rt.string_kind("Tensor.to", 1) == "device" and rt.accepts("device", "cuda:0")
    assert not rt.accepts("device", "file:/etc/passwd")
    assert rt.string_kind("Tensor.matmul", 1) is None
    assert rt.string_kind("torch.matmul", 0) is None
    assert rt.string_kind("torch.save", "f") is None
    assert rt.string_kind("Tensor.add", "equation") is None


def test_dtypes_are_an_allow_list():
    for name, dt in DTYPES.items():
        assert isinstance(dt, torch.dtype) and dtype_name(dt) == name
        assert dtype_from_name(name) is dt
    for name in ("os", "load", "Tensor", "float", "__builtins__", "", 5, None, ["float64"]):
        with pytest.raises(ValueError):
            dtype_from_name(name)


# -- real scripts still replay ---------------------------------------------------------------

def _wide_model_steps():
    """A little of everything the table covers, as nn modules and functional calls."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    conv1 = torch.nn.Conv1d(2, 2, 3, padding="same")
    emb = torch.nn.Embedding(5, 4)
    ln = torch.nn.LayerNorm(4)
    lin = torch.nn.Linear(4, 3)
    img = torch.randn(2, 2, 6, 6)
    ids = torch.tensor([1, 3])
    y = torch.tensor([0, 2])
    params = [*conv.parameters(), *conv1.parameters(), *emb.parameters(), *ln.parameters(),
              *lin.parameters()]
    with gradtrace.trace() as t:
        for _ in range(2):
            h = F.max_pool2d(torch.relu(conv(img)), 2).flatten(1)          # (2, 27)
            h = h[:, ::7] + conv1(img[:, :, 0]).mean(-1).repeat(1, 2)     # (2, 4)
            h = (h + ln(emb(ids))).to(torch.float32) * 2 - 1
            h = h.contiguous(memory_format=torch.contiguous_format)
            h = F.gelu(h, approximate="tanh") + F.silu(h) + torch.sigmoid(h) ** 2 + h.T.T / 3
            h = torch.einsum("bi,bi->bi", h, F.leaky_relu(h, 0.1)) + F.pad(h, (1, 1))[:, 1:-1]
            z = lin(torch.tanh(F.dropout(h, p=0.3, training=False)))
            loss = F.cross_entropy(z, y) + F.mse_loss(z.softmax(-1), F.one_hot(y, 3).float(),
                                                      reduction="sum")
            loss = loss + torch.cat([z, z.exp()], 1).logsumexp(1).mean() + z.norm(p="fro") / 10
            loss.backward()
            with torch.no_grad():
                for p in params:
                    p -= 0.01 * p.grad
                    p.grad = None
    return t.result


def test_a_wide_model_replays_and_passes_the_numeric_check():
    trace = _wide_model_steps()
    for step in trace.steps:
        for o in step.ops:
            if (o.is_graph or o.parent is not None) and not o.is_function:
                assert rt.replayable(o.target, o.name) is not None, o.target
    checks = trace.check(numeric="all").of("numeric")
    assert len(checks) == 2 * 9
    assert all(c.status == "pass" for c in checks), [str(c) for c in checks if not c.passed]


PASSING_DEMOS = ["linreg", "linreg_concise", "softmax_regression", "crop_yield", "gd_backprop"]


@pytest.mark.parametrize("name", PASSING_DEMOS + ["custom_function"])
def test_every_op_of_the_demos_is_in_the_table(demo_trace, name):
    trace = demo_trace(name)
    for i in range(0, len(trace.steps), max(1, len(trace.steps) // 20)):
        for o in trace.steps[i].ops:
            if (o.is_graph or o.parent is not None) and not o.is_function:
                assert rt.replayable(o.target, o.name) is not None, (name, o.target)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "gd_backprop" else n
                                  for n in PASSING_DEMOS])  # gd_backprop: 3,000 steps replayed
def test_the_demos_still_pass_the_numeric_check(demo_trace, name):
    checks = demo_trace(name).check(analytic=False, diagnostics=False).of("numeric")
    assert len(checks) == 16 and all(c.status == "pass" for c in checks)


def test_custom_function_still_fails_at_its_function_and_passes_fixed(demo_trace):
    checks = demo_trace("custom_function").check(analytic=False, diagnostics=False).of("numeric")
    assert len(checks) == 16 and all(c.status == "fail" for c in checks)
    assert all("autograd.Function:Square" in c.detail for c in checks)
    fixed = demo_trace("custom_function", "--fixed")
    checks = fixed.check(analytic=False, diagnostics=False).of("numeric")
    assert len(checks) == 16 and all(c.status == "pass" for c in checks)


def test_sizes_from_the_file_cannot_make_the_replay_allocate(fit_file, tmp_path):
    # Tensor.repeat is a replayable op; these sizes would ask for 1.6e11 float64 elements.
    p = _crafted(fit_file, tmp_path, {0: {"op": "matmul", "target": "Tensor.repeat",
                                          "args": ["$t0", 200000, 100000]}})
    by_step = _numeric_by_step(gradtrace.load(p).check(numeric="all"))
    (na,) = by_step[0]
    assert na.status == "not_applicable"
    assert "Tensor.repeat would make a [1600000, 200000] tensor where the trace recorded" in na.detail
    assert all(c.status == "pass" for c in by_step[1])
