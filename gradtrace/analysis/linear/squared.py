"""The squared error: ``L = c * sum((y_hat - y)**2)`` in its many spellings.

:class:`SquaredErrorMatcher` starts at the loss and walks back through sums, means, scaling
by numbers and negation (each folds into ``c``) to the square (``**2``, ``pow(2)``,
``square``, ``d * d``) of a difference ``y_hat - y``, or to ``F.mse_loss``. Which side of
the difference is the prediction is decided by which depends on the parameters.
"""

from __future__ import annotations

import math

from ...tracefile.model import Op
from .fit import SQUARED_ERROR
from .reader import _NA, _RESHAPES, _Reader, _at, _broadcast, _num


class SquaredErrorMatcher:
    """The loss at a tensor as ``c * sum(d**2)``: (c, prediction tid, target tid, form)."""

    def __init__(self, r: _Reader) -> None:
        self.r = r
        #: the op where the squared error is formed (the op a finding about the loss names)
        self.loss_op: Op | None = None

    def squared(self, tid: int, c: float = 1.0) -> tuple[float, int, int, str]:
        """value(tid) = c * sum(d**2) over the elements it reduces: (c, pred side, target side)."""
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the loss was not made by a recorded op")
        scaled = r.rescaling(tid, op)
        if scaled is not None:
            src, num, den = scaled
            return self.squared(src, c * num / den)
        name, targs = op.name, r.tensor_args(op)
        if name == "mul" and len(op.args) >= 2:
            if targs[0] is not None and targs[0] == targs[1]:
                self.loss_op = self.loss_op or op
                return (c, *self.residual(targs[0]), "d * d")
            for i, j in ((0, 1), (1, 0)):
                s = r.scalar(op.args[j])
                t = targs[i]
                if s is not None and t is not None and t in r.dependent:
                    return self.squared(t, c * s)
        if name == "neg":
            return self.squared(r.source(op), -c)
        if name in ("pow", "float_power") and len(op.args) >= 2 and _num(op.args[1]) == 2.0:
            self.loss_op = self.loss_op or op
            return (c, *self.residual(r.source(op, 0, SQUARED_ERROR)), "d ** 2")
        if name == "square":
            self.loss_op = self.loss_op or op
            return (c, *self.residual(r.source(op, 0, SQUARED_ERROR)), "d.square()")
        if name == "mse_loss":
            red = r.kw(op, "reduction", 2, "mean")
            if op.kwargs.get("weight") is not None:
                raise _NA("a weighted mse_loss", SQUARED_ERROR)
            a, b = targs[0], targs[1]
            pred, target = self._sides(a, b)
            n = math.prod(_broadcast(r.shape(pred), r.shape(target)))
            self.loss_op = self.loss_op or op
            if red == "mean":
                return (c / n, pred, target, "mse_loss(reduction='mean')")
            if red in ("sum", "none"):
                return (c, pred, target, f"mse_loss(reduction='{red}')")
            raise _NA(f"mse_loss with reduction {red!r}", SQUARED_ERROR)
        raise _NA(f"the loss applies {name}{_at(op)}, which is not part of a squared error")

    def residual(self, tid: int) -> tuple[int, int]:
        r = self.r
        op = r.op(tid)
        if op is None:
            raise _NA("the squared term was not made by a recorded op", SQUARED_ERROR)
        targs = r.tensor_args(op)
        if op.name in _RESHAPES and targs and targs[0] is not None:
            return self.residual(targs[0])
        if op.name == "sub" and len(targs) >= 2 and targs[0] is not None and targs[1] is not None:
            if _num(op.kwargs.get("alpha", 1)) != 1.0:
                raise _NA("sub with alpha", SQUARED_ERROR)
            return self._sides(targs[0], targs[1])
        raise _NA(f"the squared term is {op.name}, not a difference y_hat - y", SQUARED_ERROR)

    def _sides(self, a: int | None, b: int | None) -> tuple[int, int]:
        r = self.r
        if a is None or b is None:
            raise _NA("a difference with a number", SQUARED_ERROR)
        da, db = a in r.dependent, b in r.dependent
        if da and not db:
            return a, b
        if db and not da:
            return b, a
        raise _NA("both sides of the difference depend on the parameters" if da else
                  "neither side of the difference depends on the parameters", SQUARED_ERROR)
