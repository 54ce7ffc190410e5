"""Linear models under a squared-error or softmax cross-entropy loss, recognised from recorded ops.

The recognition reads one recorded :class:`~gradtrace.tracefile.model.Step` (its ops, the
values they saw, the backward graph) and never the script's text::

    fit = recognize(step)            # LinearFit, or NotApplicable (falsy, with .reason)
    fit = fit_of(step)               # the same, recognised once per step object and shared
    fit.X, fit.y                     # float64 (n, d) features as fed to the model, (n, k) targets
    fit.param_tids                   # (weight tid, bias tid or None)
    fit.constant                     # c in L = c * sum((y_hat - y)**2)  (or c * sum(CE_i))
    fit.values()                     # {tid: tensor}: the parameters as this step saw them
    fit.loss(values)                 # the loss at other parameter values, a float
    fit.gradient(values=None)        # closed form: {tid: dL/dparam}, shaped like the params
    fit.optimum()                    # least squares: {tid: theta*} (normal equations)
    fit.hessian()                    # (P, P) over (weight, bias) flattened, weight first
    pool([fit, ...])                 # one fit over the rows of many steps (the "full data")

Models: ``X @ w + b``, ``torch.matmul(X, w) + b``, ``X @ w.t() + b`` (several outputs),
``nn.Linear`` / ``F.linear`` / ``torch.addmm``, ``x * w + b`` with a one-element ``w``,
with or without a bias; features may be built beforehand (anything that does not depend on
a parameter is data). Losses: ``L = c * sum((y_hat - y)**2)`` in any spelling made of
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
- :mod:`.model`: the model under the loss, ``X @ W + b`` through views of the parameters.
- :mod:`.squared` and :mod:`.softmax`: the two loss families, each a matcher from the root.
- :mod:`.recognize`: :func:`recognize` puts them together and confirms the result.
"""

from __future__ import annotations

from ...errors import NotApplicableError
from .fit import SOFTMAX_CE, SQUARED_ERROR, LinearFit, NotApplicable, pool
from .model import unrecorded_view
from .recognize import fit_of, recognize

__all__ = [
    "LinearFit", "NotApplicable", "NotApplicableError", "recognize", "fit_of", "pool", "unrecorded_view",
    "SQUARED_ERROR", "SOFTMAX_CE",
]
