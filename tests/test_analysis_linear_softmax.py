"""analysis.linear.softmax: softmax cross-entropy in its spellings, its constant, its logits and target distribution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gradtrace
from gradtrace.analysis.linear import SOFTMAX_CE, recognize
from gradtrace.analysis.linear.reader import _NA, _Reader
from gradtrace.analysis.linear.softmax import CrossEntropyMatcher
from linear_data import N, D, K, X, LABELS, params as _params, one_step as _step, agrees as _agrees

HERE = Path(__file__).name  # the source lines recorded here name this file


W, B = _params((K, D), (K,))

SOFTMAX = [
    ("F.cross_entropy (mean)", lambda: F.cross_entropy(X @ W.t() + B, LABELS), 1 / N),
    ("F.cross_entropy sum", lambda: F.cross_entropy(X @ W.t() + B, LABELS, reduction="sum"), 1.0),
    ("cross_entropy none, then mean", lambda: F.cross_entropy(F.linear(X, W, B), LABELS, reduction="none").mean(), 1 / N),
    ("nll_loss(log_softmax)", lambda: F.nll_loss(F.log_softmax(F.linear(X, W, B), 1), LABELS), 1 / N),
    ("-log(softmax[range(n), y]).mean()",
     lambda: -torch.log(torch.softmax(X @ W.t() + B, dim=1)[range(N), LABELS]).mean(), 1 / N),
    ("by hand: exp / exp.sum, summed",
     lambda: (lambda e: -torch.log((e / e.sum(1, keepdim=True))[range(N), LABELS]).sum())(torch.exp(X @ W.t() + B)), 1.0),
    ("-(onehot * log p).sum(1).mean()",
     lambda: -(F.one_hot(LABELS, K) * torch.log(torch.softmax(X @ W.t() + B, 1))).sum(1).mean(), 1 / N),
    ("log_softmax.gather", lambda: -torch.log_softmax(X @ W.t() + B, 1).gather(1, LABELS.view(-1, 1)).mean(), 1 / N),
    ("probability targets", lambda: F.cross_entropy(X @ W.t() + B, F.one_hot(LABELS, K).float()), 1 / N),
]


@pytest.mark.parametrize("desc,loss,c", SOFTMAX, ids=[f[0] for f in SOFTMAX])
def test_each_softmax_cross_entropy_form_gets_its_constant(desc, loss, c):
    step = _step(loss)
    fit = recognize(step)
    assert fit, fit
    assert fit.loss_kind == SOFTMAX_CE
    assert fit.constant == pytest.approx(c, rel=1e-12)
    assert fit.loss() == pytest.approx(step.loss, rel=1e-5)
    _agrees(step, fit)


def test_label_smoothing_is_folded_into_the_targets():
    step = _step(lambda: F.cross_entropy(X @ W.t() + B, LABELS, label_smoothing=0.2))
    fit = recognize(step)
    assert fit and fit.y[0].tolist() == pytest.approx([0.9, 0.1])
    _agrees(step, fit)


# -- the matcher on its own: (a, logits, Y, form) with L = a * sum Y log softmax(z) ----------------

ONE_HOT = F.one_hot(LABELS, K).double()


def _matched(loss_fn):
    """CrossEntropyMatcher at the root of one recorded backward: (step, matcher, its answer)."""
    step = _step(loss_fn)
    m = CrossEntropyMatcher(_Reader(step))
    return step, m, m.cross_entropy(step.backward.roots[0])


def _logits(step) -> int:
    return next(o for o in step.ops if o.name == "matmul").outputs[0]


@pytest.mark.parametrize("loss,a,form,at", [
    (lambda: F.cross_entropy(X @ W.t(), LABELS), -1 / N, "cross_entropy(reduction='mean')", "cross_entropy"),
    (lambda: F.nll_loss(torch.log_softmax(X @ W.t(), 1), LABELS, reduction="sum") * 2, -2.0,
     "nll_loss(reduction='sum')", "nll_loss"),
    (lambda: (lambda z: -(z - torch.logsumexp(z, 1, keepdim=True)).gather(1, LABELS.view(-1, 1)).sum())(X @ W.t()),
     -1.0, "-log_softmax(z)[range(n), y]", "gather"),
    (lambda: (lambda e: -torch.log(e / e.sum(1, keepdim=True))
              .take_along_dim(LABELS.view(-1, 1), 1).mean())(torch.exp(X @ W.t())),
     -1 / N, "-log_softmax(z)[range(n), y]", "take_along_dim"),
    (lambda: -torch.log(torch.softmax(X @ W.t(), 1)[range(N), LABELS]).sum(), -1.0,
     "-log(softmax(z)[range(n), y])", "log"),
])
def test_each_spelling_gives_its_factor_the_logits_and_one_hot_targets(loss, a, form, at):
    step, m, (got_a, z, Y, got_form) = _matched(loss)
    assert got_a == pytest.approx(a, rel=1e-15) and got_form == form
    assert z == _logits(step)
    torch.testing.assert_close(Y, ONE_HOT, rtol=0, atol=0)
    assert m.loss_op is not None and m.loss_op.name == at


@pytest.mark.parametrize("loss,reason", [
    (lambda: F.cross_entropy(X @ W.t(), LABELS, weight=torch.ones(K)), "cross_entropy with class weights"),
    (lambda: F.cross_entropy(X @ W.t(), torch.where(LABELS == 1, -100, LABELS)),
     "cross_entropy with targets equal to ignore_index"),
    (lambda: F.cross_entropy((X @ W.t()).reshape(N, K, 1), LABELS.reshape(N, 1)),
     "cross_entropy of logits of shape (8, 2, 1) (only (n, classes))"),
    (lambda: -torch.log(torch.softmax(X @ W.t(), 0)[range(N), LABELS]).mean(),
     "softmax is not a softmax over the classes"),
    (lambda: -torch.log(torch.softmax(X @ W.t(), 1)).sum(),
     "log(softmax(z)) summed without picking the target classes"),
])
def test_what_is_not_a_softmax_cross_entropy_says_why_in_its_family(loss, reason):
    with pytest.raises(_NA) as e:
        _matched(loss)
    assert e.value.reason == reason and e.value.family == SOFTMAX_CE


def test_a_loss_that_is_no_cross_entropy_at_all_says_the_op_and_where_it_is():
    with pytest.raises(_NA) as e:
        _matched(lambda: (X @ W.t()).tanh().sum())
    assert e.value.family is None
    assert e.value.reason.startswith(f"the loss applies tanh at {HERE}:")
    assert e.value.reason.endswith(", which is not part of a softmax cross-entropy")


def test_targets_become_a_distribution_per_row_or_a_reason():
    m = CrossEntropyMatcher(_Reader(_step(lambda: F.cross_entropy(X @ W.t(), LABELS))))
    labels = torch.tensor([2, 0, 1])
    torch.testing.assert_close(m._targets(labels, (3, 3), -100, "cross_entropy"),
                               torch.eye(3, dtype=torch.float64)[[2, 0, 1]], rtol=0, atol=0)
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    torch.testing.assert_close(m._targets(probs, (2, 2), -100, "cross_entropy"), probs.double(),
                               rtol=0, atol=0)
    for tv, zs, says in [
        (labels, (4, 3), "cross_entropy with 3 targets for 4 rows"),
        (torch.tensor([0, 3, 1]), (3, 3), "cross_entropy with targets outside 0..2"),
        (torch.tensor([0, 7, 1]), (3, 3), "cross_entropy with targets equal to ignore_index"),
        (probs, (2, 3), "cross_entropy with float targets of shape (2, 2)"),
    ]:
        with pytest.raises(_NA) as e:
            m._targets(tv, zs, 7, "cross_entropy")
        assert e.value.reason == says and e.value.family == SOFTMAX_CE
