"""Linear models under a squared-error or softmax cross-entropy loss, recognised from recorded ops.

The recognition reads one recorded :class:`~gradtrace.tracefile.model.Step` (its ops, the
values they saw, the backward graph) and never the script's text::

    fit = recognize(step)            # LinearFit, or NotApplicable (falsy, with .reason)
    fit = fit_of(step)               # the same, recognised once per step object and shared
    fit.X, fit.y                     # float64 (n, d) features as fed to the model, (n, k) targets
    fit.terms                        # the model: Term(param, cols, out), y_hat = sum of the terms
    fit.params                       # each parameter once (feature terms first, then intercepts)
    fit.is_intercept(tid)            # True: dL/dp = sum over rows; else X[:, cols]^T G
    fit.param_tids                   # (weight tid, bias tid or None): the X @ W + b reading
    fit.constant                     # c in L = c * sum((y_hat - y)**2)  (or c * sum(CE_i))
    fit.values()                     # {tid: tensor}: the parameters as this step saw them
    fit.loss(values)                 # the loss at other parameter values, a float
    fit.gradient(values=None)        # closed form: {tid: dL/dparam}, shaped like the params
    fit.optimum()                    # least squares: {tid: theta*} (normal equations)
    fit.hessian()                    # (P, P) over fit.params flattened (weight first, then bias)
    pool([fit, ...])                 # one fit over the rows of many steps (the "full data")

Models: anything linear in its parameters, a sum of parameter x feature terms: ``X @ w + b``,
``torch.matmul(X, w) + b``, ``X @ w.t() + b`` (several outputs), ``nn.Linear`` /
``F.linear`` / ``torch.addmm``, ``x * w + b``, ``a + b * x + c * x ** 2 + d * x ** 3`` with
scalar parameters, products with data that broadcast over rows or outputs, with or without
a bias; features may be built beforehand or in the model (anything that does not depend on
a parameter is data). A model that is not linear in its parameters gets the reason in words
("the model multiplies two parameters (b * c) at poly.py:9 ...").

Losses: ``L = c * sum((y_hat - y)**2)`` in any spelling made of
``-``, ``**2`` / ``pow(2)`` / ``square`` / ``d * d``, ``sum`` / ``mean`` (whole or per
dimension), scaling by numbers, and ``F.mse_loss`` with ``mean``/``sum``/``none``; and
softmax cross-entropy ``L = c * sum_i -sum_j Y_ij log softmax(z_i)_j`` written as
``F.cross_entropy``, ``F.nll_loss(F.log_softmax(z))``, or by hand (``exp(z) / exp(z).sum``,
``-log(p[range(n), y])``, ``gather``, ``-(Y * log p)``).

Every recognition is confirmed against the recorded values: the prediction must equal
``X @ W + b`` and the loss must equal the recognised formula, both within the dtype's
rounding; otherwise the answer is :class:`NotApplicable` with the reason, never a guess.

The pieces, each small enough to read alone:

- :mod:`.fit`: :class:`LinearFit` and :func:`pool`, the closed forms (loss, gradient,
  Hessian, optimum); knows nothing of ops.
- :mod:`.reader`: one step's ops as an expression graph (producers, parameters, constants).
- :mod:`.model`: the model under the loss as a sum of terms, ``X @ W + b`` in general.
- :mod:`.squared` and :mod:`.softmax`: the two loss families, each a matcher from the root.
- :mod:`.recognize`: :func:`recognize` puts them together and confirms the result.
"""

from __future__ import annotations

from ...errors import NotApplicableError
from .fit import SOFTMAX_CE, SQUARED_ERROR, LinearFit, NotApplicable, Term, pool
from .model import unrecorded_view
from .recognize import fit_of, recognize

__all__ = [
    "LinearFit", "NotApplicable", "Term", "NotApplicableError", "recognize", "fit_of", "pool", "unrecorded_view",
    "SQUARED_ERROR", "SOFTMAX_CE",
]
