"""analysis.diagnostics, no_grad_received: parameters that never got a gradient, why, and where.

Each case is a small training script recorded in-process from a file, so that the findings
can name its lines: an unused sub-module, a parameter used only through ``.detach()``, a
weight whose ``requires_grad`` was switched off by mistake. What is frozen or kept out of
backward on purpose (a whole frozen layer, a target network under ``no_grad``, an EMA copy
updated by hand) stays quiet.
"""

from __future__ import annotations

import textwrap

import gradtrace

HEAD = """\
import torch
from torch import nn
torch.manual_seed(0)
X, y = torch.randn(16, 3), torch.randn(16, 1)
"""

TRAIN = """\
opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
for _ in range(3):
    opt.zero_grad()
    loss = nn.functional.mse_loss(net(X), y)
    loss.backward()
    opt.step()
"""


def _findings(tmp_path, body: str, train: str = TRAIN):
    path = tmp_path / "script.py"
    path.write_text(HEAD + textwrap.dedent(body) + train)
    code = compile(path.read_text(), str(path), "exec")
    with gradtrace.trace(tmp_path / "script.gtrace") as t:
        exec(code, {"__name__": "__main__", "__file__": str(path)})
    report = t.result.check(numeric="none")
    return [f for f in report.findings if f.kind == "no_grad_received"]


def test_an_unused_sub_module_is_named_with_the_line_that_made_it(tmp_path):
    found = _findings(tmp_path, """\
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 1)
                self.extra = nn.Linear(3, 1)
            def forward(self, x):
                return self.fc(x)
        net = Net()
        """)
    assert sorted(f.param for f in found) == ["net.extra.bias", "net.extra.weight"]
    for f in found:
        assert f.source == "script.py:9" and f.step == 0 and f.op is None  # self.extra = ...
        assert f"{f.param} is never used in the forward pass (made at script.py:9)" in f.message
        assert "net.extra is not called" in f.message and "never received a gradient" in f.message


def test_a_parameter_used_only_through_detach_is_named_at_the_detach(tmp_path):
    found = _findings(tmp_path, """\
        w = torch.randn(3, 1, requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        for _ in range(2):
            y_hat = X @ w.detach() + b
            loss = ((y_hat - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                b -= 0.1 * b.grad
                b.grad = None
        """, train="")
    [f] = found
    assert (f.param, f.op, f.source, f.step) == ("w", "detach", "script.py:8", 0)
    assert "uses it only through w.detach() (at script.py:8)" in f.message
    assert "never received a gradient" in f.message


def test_requires_grad_false_by_mistake_next_to_trained_parameters(tmp_path):
    found = _findings(tmp_path, """\
        net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        net[0].weight.requires_grad = False
        """)
    [f] = found
    assert (f.param, f.op, f.source, f.step) == ("net.0.weight", "linear", "script.py:10", 0)
    assert "did not require grad there (requires_grad was False) (made at script.py:5)" in f.message
    assert "do not set requires_grad = False" in f.message


def test_a_parameter_whose_use_does_not_reach_the_loss_keeps_its_message(tmp_path):
    found = _findings(tmp_path, """\
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 1)
                self.side = nn.Linear(3, 1)
            def forward(self, x):
                self.aux = self.side(x)  # computed, never part of the loss
                return self.fc(x)
        net = Net()
        """)
    assert sorted(f.param for f in found) == ["net.side.bias", "net.side.weight"]
    for f in found:
        assert f.op == "linear" and f.source == "script.py:11"
        assert "no backward pass reached it: it never received a gradient" in f.message


def test_what_is_kept_out_of_backward_on_purpose_is_quiet(tmp_path):
    found = _findings(tmp_path, """\
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(3, 4)
                self.backbone = nn.Linear(4, 4)
                self.head = nn.Linear(4, 1)
                self.ema = nn.Linear(4, 4)
                for p in self.backbone.parameters():  # fine-tuning: the whole layer frozen
                    p.requires_grad = False
            def forward(self, x):
                return self.head(torch.tanh(self.backbone(torch.tanh(self.embed(x)))))
        net = Net()
        target = nn.Linear(3, 1)
        """, train=TRAIN + """\
    with torch.no_grad():
        target(X)  # a target network, evaluated without gradients
        for e, p in zip(net.ema.parameters(), net.backbone.parameters()):
            e.mul_(0.9).add_(0.1 * p)  # an EMA copy, updated by hand
""")
    assert found == []


def test_a_run_where_every_parameter_learns_is_quiet(tmp_path):
    assert _findings(tmp_path, "net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))\n") == []
