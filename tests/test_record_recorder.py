"""record/recorder.py, the recorder: the events of one step, every zeroing and update idiom, leaving nothing behind."""

from __future__ import annotations

import gc
import io
import sys
import time
import weakref

import pytest
import torch
from torch import nn

import gradtrace
from gradtrace.record.backward import BackwardPass
from gradtrace.tracefile.store import COMMIT_WINDOW


# -- the d2l step, exactly ----------------------------------------------------------------------
def test_linreg_first_step_exact_sequence(demo_trace):
    t = demo_trace("linreg")
    s = t.steps[0]
    assert [(o.name, o.is_graph) for o in s.ops] == [
        ("matmul", True), ("add", True), ("reshape", False), ("sub", True), ("pow", True),
        ("div", True), ("sum", True)]
    assert [o.grad_fn for o in s.graph_ops] == [
        "MmBackward0", "AddBackward0", "SubBackward0", "PowBackward0", "DivBackward0", "SumBackward0"]
    # the leaves are named as the script names them
    matmul, add, reshape = s.ops[0], s.ops[1], s.ops[2]
    assert [t.name(i) for i in matmul.inputs] == ["X", "w"]
    assert t.name(add.inputs[1]) == "b"
    assert t.name(reshape.inputs[0]) == "y"
    assert matmul.source.code == "return torch.matmul(X, w) + b"
    assert matmul.source.short == "linreg.py:39"
    # backward: the grad_fn chain from the loss, in autograd's execution order
    bw = s.backward
    assert bw.api == "Tensor.backward"
    assert [n.name for n in bw.execution_order] == [
        "SumBackward0", "DivBackward0", "PowBackward0", "SubBackward0", "AddBackward0",
        "AccumulateGrad", "MmBackward0", "AccumulateGrad"]
    assert {t.name(n.variable) for n in bw.nodes if n.variable is not None} == {"w", "b"}
    assert bw.nodes[0].grad_outputs[0].data.item() == 1.0  # d loss / d loss
    # then two fresh accumulations, two updates and two zeroings, in program order
    assert [(e.kind, t.name(e.tensor), e.idiom) for e in s.events] == [
        ("accumulate", "b", "fresh"), ("accumulate", "w", "fresh"),
        ("update", "w", "p.sub_() (no_grad)"), ("zero", "w", "p.grad.zero_()"),
        ("update", "b", "p.sub_() (no_grad)"), ("zero", "b", "p.grad.zero_()")]
    assert all(e.fresh for e in s.accumulations)
    # the second step adds onto the zeroed gradients: not the forgot-to-zero case
    assert [e.idiom for e in t.steps[1].accumulations] == ["added onto zeros"] * 2


def test_linreg_values_are_the_real_ones(demo_trace):
    t = demo_trace("linreg")
    s = t.steps[0]
    matmul, add = s.ops[0], s.ops[1]
    X, w = (s.value(i).data for i in matmul.inputs)
    b = s.value(add.inputs[1]).data
    assert torch.equal(s.value(matmul.outputs[0]).data, X @ w)
    assert torch.equal(s.value(add.outputs[0]).data, X @ w + b)
    upd = s.updates[0]
    assert torch.equal(upd.before.data, w)            # w before the update = w in forward
    acc_w = [e for e in s.accumulations if t.name(e.tensor) == "w"][0]
    assert torch.allclose(upd.after.data, w - 0.03 * acc_w.after.data / 10)
    assert torch.equal(s.zeroings[0].after.data, torch.zeros(2, 1))
    assert s.loss == pytest.approx(float(s.value(s.ops[-1].outputs[0]).data))


def test_final_print_is_a_forward_only_last_step(demo_trace):
    t = demo_trace("linreg")
    last = t.steps[-1]
    assert last.backward is None
    assert [o.name for o in last.graph_ops] == ["reshape", "sub", "rsub"]  # w.reshape is graph
    assert len(t.steps) == 301


# -- idioms: one test each ---------------------------------------------------------------------------
def _params():
    torch.manual_seed(0)
    w = torch.randn(3, 1, requires_grad=True)
    X = torch.randn(4, 3)
    return w, X


def _one_step(w, X):
    (X @ w).pow(2).sum().backward()


def _events(fn, kind):
    w, X = _params()
    with gradtrace.trace() as t:
        fn(w, X)
    evs = [e for s in t.steps for e in s.events if e.kind == kind]
    return t, evs


ZEROINGS = {
    "p.grad.zero_()": lambda w: w.grad.zero_(),
    "p.grad.data.zero_()": lambda w: w.grad.data.zero_(),
    "p.grad = None": lambda w: setattr(w, "grad", None),
    "p.grad[...] = …": lambda w: w.grad.__setitem__(slice(None), 0),
    "p.grad.mul_()": lambda w: w.grad.mul_(0),
}


@pytest.mark.parametrize("idiom", sorted(ZEROINGS))
def test_zeroing_idioms(idiom):
    def fn(w, X):
        _one_step(w, X)
        ZEROINGS[idiom](w)

    t, zs = _events(fn, "zero")
    assert [z.idiom for z in zs] == [idiom]
    assert t.name(zs[0].tensor) == "w"
    assert zs[0].before.data.abs().sum() > 0            # what was cleared
    assert zs[0].after is None or not zs[0].after.data.any()


def test_grad_star_equals_zero_source_line():
    def fn(w, X):
        _one_step(w, X)
        w.grad *= 0

    _, zs = _events(fn, "zero")
    assert zs[0].idiom == "p.grad.mul_()"  # `*=` reaches torch as mul_
    assert zs[0].source.code == "w.grad *= 0"


@pytest.mark.parametrize("set_to_none", [True, False])
def test_optimizer_zero_grad(set_to_none):
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X = torch.randn(4, 3)
    with gradtrace.trace() as t:
        net(X).sum().backward()
        opt.zero_grad(set_to_none=set_to_none)
    zs = [e for e in t.steps[0].events if e.kind == "zero"]
    want = "optimizer.zero_grad(set_to_none=True)" if set_to_none else "optimizer.zero_grad()"
    assert [(t.name(z.tensor), z.idiom) for z in zs] == [("net.weight", want), ("net.bias", want)]
    assert all(z.via == "Optimizer.zero_grad" for z in zs)
    assert zs[0].source.code.startswith("opt.zero_grad(")


def test_module_zero_grad():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    X = torch.randn(4, 3)
    with gradtrace.trace() as t:
        net(X).sum().backward()
        net.zero_grad()
    zs = [e for e in t.steps[0].events if e.kind == "zero"]
    assert [t.name(z.tensor) for z in zs] == ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"]
    assert {z.idiom for z in zs} == {"module.zero_grad(set_to_none=True)"}


UPDATES = {
    "p.sub_() (no_grad)": lambda w: w.sub_(0.1 * w.grad),
    "p.add_() (no_grad)": lambda w: w.add_(w.grad, alpha=-0.1),
    "p.copy_() (no_grad)": lambda w: w.copy_(w - 0.1 * w.grad),
    "p.data.sub_()": lambda w: w.data.sub_(0.1 * w.grad.data),
    "p.data = …": lambda w: setattr(w, "data", w.data - 0.1 * w.grad.data),
}


@pytest.mark.parametrize("idiom", sorted(UPDATES))
def test_update_idioms(idiom):
    def fn(w, X):
        _one_step(w, X)
        if idiom.endswith("(no_grad)"):
            with torch.no_grad():
                UPDATES[idiom](w)
        else:
            UPDATES[idiom](w)

    t, us = _events(fn, "update")
    assert [u.idiom for u in us] == [idiom]
    u = us[0]
    g = [e for e in t.steps[0].accumulations][0].after.data
    assert torch.allclose(u.after.data, u.before.data - 0.1 * g)


def test_update_by_minus_equals_under_no_grad_and_data():
    w, X = _params()
    with gradtrace.trace() as t:
        _one_step(w, X)
        with torch.no_grad():
            w -= 0.1 * w.grad
        w.data -= 0.1 * w.grad.data
    us = t.steps[0].updates
    assert [u.idiom for u in us] == ["p.sub_() (no_grad)", "p.data.sub_()"]  # no double count
    assert [u.source.code for u in us] == ["w -= 0.1 * w.grad", "w.data -= 0.1 * w.grad.data"]


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop])
def test_optimizer_step_is_one_update_per_param(opt_cls):
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    opt = opt_cls(net.parameters(), lr=0.1)
    X = torch.randn(4, 3)
    before = [p.detach().clone() for p in net.parameters()]
    with gradtrace.trace() as t:
        net(X).sum().backward()
        opt.step()
    us = t.steps[0].updates
    assert [(t.name(u.tensor), u.idiom) for u in us] == [
        ("net.weight", f"{opt_cls.__name__}.step()"), ("net.bias", f"{opt_cls.__name__}.step()")]
    for u, b, p in zip(us, before, net.parameters()):
        assert torch.equal(u.before.data, b)
        assert torch.equal(u.after.data, p.detach())


def test_added_on_top_when_never_zeroed():
    w, X = _params()
    with gradtrace.trace() as t:
        for _ in range(3):
            _one_step(w, X)
    assert [e.idiom for s in t.steps for e in s.accumulations] == ["fresh", "added", "added"]
    a = t.steps[1].accumulations[0]
    assert torch.allclose(a.after.data, a.before.data + a.incoming.data)


def test_autograd_grad_is_a_step_without_accumulation():
    w, X = _params()
    with gradtrace.trace() as t:
        (g,) = torch.autograd.grad((X @ w).pow(2).sum(), w)
    s = t.steps[0]
    assert s.backward.api == "autograd.grad"
    assert s.backward.inputs == (s.graph_ops[0].inputs[1],)
    assert torch.equal(s.backward.results[0].data, g)
    assert s.accumulations == ()
    assert w.grad is None


def test_each_backward_is_a_step_gradient_accumulation():
    w, X = _params()
    with gradtrace.trace() as t:
        for _ in range(2):
            _one_step(w, X)
        with torch.no_grad():
            w -= 0.1 * w.grad
        w.grad = None
    assert [len(s.accumulations) for s in t.steps] == [1, 1]
    assert [e.kind for e in t.steps[1].events] == ["accumulate", "update", "zero"]


# -- options -------------------------------------------------------------------------------------------
def _loop(n, w, X):
    for _ in range(n):
        _one_step(w, X)
        with torch.no_grad():
            w -= 0.01 * w.grad
            w.grad.zero_()


def test_every_nth_step():
    w, X = _params()
    with gradtrace.trace(every=10) as t:
        _loop(35, w, X)
    assert t.steps.indices == [0, 10, 20, 30]
    for s in t.steps:
        assert [o.name for o in s.graph_ops] == ["matmul", "pow", "sum"]
        assert [e.kind for e in s.events] == ["accumulate", "update", "zero"]
    assert torch._C._len_torch_function_stack() == 0
    assert sys.getprofile() is None


def test_every_nth_step_matches_full_recording():
    w1, X = _params()
    with gradtrace.trace() as full:
        _loop(12, w1, X)
    w2, X = _params()
    with gradtrace.trace(every=5) as sampled:
        _loop(12, w2, X)
    assert torch.equal(w1, w2)
    for s in sampled.steps:
        f = full.step(s.index)
        assert torch.equal(s.updates[0].after.data, f.updates[0].after.data)
        assert s.loss == f.loss


def test_step_range():
    w, X = _params()
    with gradtrace.trace(step_range=(3, 6)) as t:
        _loop(10, w, X)
    assert t.steps.indices == [3, 4, 5]


# -- never change a result, leave nothing behind -------------------------------------------------------
def _train_linear(n=20):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    X, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(n):
        opt.zero_grad()
        nn.functional.mse_loss(net(X), y).backward()
        opt.step()
    return net


def test_bit_identical_and_saves_identically():
    plain = _train_linear()
    with gradtrace.trace():
        traced = _train_linear()
    for a, b in zip(plain.parameters(), traced.parameters()):
        assert torch.equal(a, b)
    buf1, buf2 = io.BytesIO(), io.BytesIO()
    torch.save(plain.state_dict(), buf1)
    torch.save(traced.state_dict(), buf2)
    assert buf1.getvalue() == buf2.getvalue()
    w1, w2 = io.BytesIO(), io.BytesIO()
    torch.save(plain[0].weight, w1)
    torch.save(traced[0].weight, w2)
    assert w1.getvalue() == w2.getvalue()


def _installed():
    from torch.nn.modules import module as m
    from torch.optim import optimizer as o
    from torch.utils.data import dataloader as dl

    return (torch._C._len_torch_function_stack(), len(m._global_forward_pre_hooks),
            len(m._global_forward_hooks), len(o._global_optimizer_pre_hooks),
            len(o._global_optimizer_post_hooks), torch.autograd.Function.__dict__["apply"],
            dl._BaseDataLoaderIter.__dict__["__next__"], torch.autograd.backward,
            torch.autograd.grad, sys.getprofile())


@pytest.mark.parametrize("options", [{}, {"every": 3}])
def test_nothing_left_installed_after_a_trace_that_raised(options):
    before = _installed()
    w, X = _params()
    with pytest.raises(ZeroDivisionError):
        with gradtrace.trace(**options) as t:
            _loop(4, w, X)
            _ = 1 / 0
    assert _installed() == before
    assert t.info.status == "raised"
    assert "ZeroDivisionError" in t.info.error
    # and later backward passes run no gradtrace code
    calls = []
    orig = BackwardPass.write
    BackwardPass.write = lambda *a, **k: calls.append(1)
    try:
        _loop(2, w, X)
    finally:
        BackwardPass.write = orig
    assert calls == []


def test_no_graph_kept_alive_after_the_trace():
    torch.manual_seed(0)
    w = torch.randn(3, 3, requires_grad=True)
    X = torch.randn(5, 3)
    with gradtrace.trace():
        h = torch.tanh(X @ w)          # tanh keeps its output for backward
        loss = h.sum()
        loss.backward()
        ref = weakref.ref(h)
        del h, loss
    gc.collect()
    assert ref() is None


def test_trace_file_round_trip(tmp_path):
    w, X = _params()
    path = tmp_path / "run.gtrace"
    with gradtrace.trace(path) as t:
        _loop(3, w, X)
    loaded = gradtrace.load(path)
    assert len(loaded.steps) == len(t.steps) == 3
    for a, b in zip(loaded.steps, t.steps):
        assert [(o.name, o.inputs, o.outputs) for o in a.ops] == [(o.name, o.inputs, o.outputs) for o in b.ops]
        assert [(e.kind, e.idiom) for e in a.events] == [(e.kind, e.idiom) for e in b.events]
    assert loaded.info.status == "completed"
    assert not (tmp_path / "run.gtrace-wal").exists()


def test_module_initialisers_are_updates_not_history():
    torch.manual_seed(0)
    with gradtrace.trace() as t:
        model = nn.Linear(3, 2)
        X = torch.randn(4, 3)
        model(X).sum().backward()
    s = t.steps[0]
    assert [(e.kind, t.name(e.tensor), e.idiom) for e in s.events[:2]] == [
        ("update", "model.weight", "p.kaiming_uniform_()"), ("update", "model.bias", "p.uniform_()")]
    assert [o.name for o in s.ops] == ["linear", "sum"]  # init is no prep op of the weight


def test_leaves_take_the_outermost_name():
    def mse(t1, t2):
        diff = t1 - t2
        return (diff * diff).sum()

    w, X = _params()
    y = torch.randn(4, 1)
    with gradtrace.trace() as t:
        mse(X @ w, y).backward()
    sub = t.steps[0].graph_ops[1]
    assert [t.name(i) for i in sub.inputs][1] == "y"


def test_nan_loss_survives_the_file(tmp_path):
    w = torch.ones(1, requires_grad=True)
    with gradtrace.trace(tmp_path / "nan.gtrace") as t:
        (w * float("nan")).sum().backward()
    assert t.step_rows()[0]["loss"] != t.step_rows()[0]["loss"]  # NaN, not None
    assert t.steps[0].loss != t.steps[0].loss


def test_transpose_property_and_tuple_args_are_recorded():
    torch.manual_seed(0)
    W = torch.randn(2, 3, requires_grad=True)
    X = torch.randn(4, 3)
    with gradtrace.trace() as t:
        out = X @ W.T
        out[1:, (0, 1)].reshape((-1,)).sum().backward()
    s = t.steps[0]
    T = s.ops[0]
    assert (T.name, T.target, t.name(T.inputs[0])) == ("T", "Tensor.T.__get__", "W")
    assert torch.equal(s.value(T.outputs[0]).data, W.detach().T)
    getitem = [o for o in s.ops if o.name == "getitem"][0]
    assert getitem.args[1] == ({"slice": [1, None, None]}, (0, 1))
    assert [o for o in s.ops if o.name == "reshape"][0].args[1] == (-1,)


# -- real scripts run unchanged (issue 11) -----------------------------------------------------
def test_updates_through_no_grad_views_are_updates_of_the_parameter():
    w = torch.ones(4, 1, requires_grad=True)
    X = torch.randn(8, 4)
    with gradtrace.trace() as t:
        for _ in range(2):
            (X @ w).pow(2).mean().backward()
            with torch.no_grad():
                flat = w.view(-1)
                flat[1:3] -= 0.1 * w.grad.view(-1)[1:3]  # a view of a view, then its write-back
                w[0] -= 0.1 * w.grad[0]
            w.grad.zero_()
    s = t.steps[0]
    updates = [e for e in s.events if e.kind == "update"]
    tid = s.ops[0].inputs[1]
    assert t.name(tid) == "w"
    assert len(updates) == 2 and {e.tensor for e in updates} == {tid}  # one per line, both of w
    assert updates[0].after.shape == (4, 1)  # the value of w, not of the view
    assert torch.equal(updates[0].before.data, torch.ones(4, 1))
    changed = (updates[0].after.data != 1).flatten().tolist()
    assert changed == [False, True, True, False]  # flat[1:3] of w
    assert {x.role for x in t.tensors.values()} <= {"param", "input", "activation"}
    assert sum(1 for x in t.tensors.values() if x.role == "param") == 1  # no view passes for one


def test_lazy_modules_are_recorded_once_materialised():
    net = nn.Sequential(nn.LazyLinear(1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X = torch.randn(5, 3)
    with gradtrace.trace() as t:
        for _ in range(2):
            loss = net(X).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    lin = t.steps[0].ops[0]
    assert [t.name(i) for i in lin.inputs] == ["X", "net.0.weight", "net.0.bias"]
    assert t.tensors[lin.inputs[1]].shape == (1, 3)
    assert [e.kind for e in t.steps[1].events if e.kind == "update"] == ["update", "update"]


def test_other_threads_and_torch_func_are_said_in_one_line_each(capsys):
    import threading

    w = torch.zeros(2, requires_grad=True)

    def train():
        for _ in range(3):
            (w * 2).sum().backward()

    with gradtrace.trace() as t:
        th = threading.Thread(target=train)
        th.start()
        th.join()
        torch.func.vmap(torch.func.grad(lambda x: (x * x).sum()))(torch.ones(4, 2))
    assert len(t.steps) == 0
    assert torch.equal(w.grad, torch.full((2,), 6.0))
    err = capsys.readouterr().err.splitlines()
    assert [x for x in err if "thread" in x] == [
        "gradtrace: 3 backward passes ran in other threads and were not recorded "
        "(gradtrace records the thread that started it)"]
    func = [x for x in err if "torch.func" in x]
    assert len(func) == 1 and "not recorded (gradtrace records autograd, not functorch)" in func[0]


KILLED = """
import time, torch
torch.manual_seed(0)
w = torch.randn(3, 1, requires_grad=True)
X = torch.randn(8, 3)
opt = torch.optim.SGD([w], lr=0.01)
for i in range(6):
    if OPTIMIZER:
        opt.zero_grad()
        (X @ w).pow(2).mean().backward()
        opt.step()
    else:
        (X @ w).pow(2).mean().backward()
        with torch.no_grad():
            w -= 0.01 * w.grad
            w.grad.zero_()
    print(f"step {i} done", flush=True)
time.sleep(120)
"""


@pytest.mark.slow  # a real process, killed
@pytest.mark.parametrize("optimizer", [True, False])
def test_kill_9_after_step_k_keeps_k_steps(tmp_path, optimizer):
    import os
    import subprocess

    p = tmp_path / "script.py"
    p.write_text(KILLED.replace("OPTIMIZER", str(optimizer)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gradtrace", "run", "-o", "out.gtrace", str(p)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        for i in range(6):
            assert proc.stdout.readline() == f"step {i} done\n"
        time.sleep(2 * COMMIT_WINDOW + 0.3)  # group commit: kill -9 loses at most the window
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    t = gradtrace.load(tmp_path / "out.gtrace")
    assert t.info.status == "running"  # it never got to say how it ended
    assert t.steps.indices == [0, 1, 2, 3, 4, 5]
    last = [e.kind for e in t.steps[5].events]
    assert last == (["accumulate", "update"] if optimizer else ["accumulate", "update", "zero"])
    # the steps before kept what came after their early write (the zero_grad of the next)
    if optimizer:
        assert [e.kind for e in t.steps[4].events] == ["accumulate", "update", "zero"]
    t.close()


def test_another_threads_optimizer_and_modules_leave_the_trace_alone():
    """The global optimizer and module hooks fire in every thread: a training thread's
    SGD.step() was counted as updates of the recording thread's run."""
    import threading

    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    X = torch.randn(4, 2)

    def train():
        for _ in range(3):
            opt.zero_grad()
            net(X).pow(2).mean().backward()
            opt.step()

    with gradtrace.trace() as t:
        th = threading.Thread(target=train)
        th.start()
        th.join()
    assert t.result.info.unrecorded["thread_backward"] == 3
    assert not [e for s in t.steps for e in s.events if e.kind == "update"]
