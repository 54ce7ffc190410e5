"""The mutations the corpus's twins make, shared by its scripts (see tests/corpus/__init__.py).

A script's ``main(steps, twin)`` runs correctly with ``twin=None``; with a kind below it
makes the one mistake named, where that mistake makes sense for its code.
"""

from __future__ import annotations

import torch

#: A backward that is off by a factor.
FACTOR = {"off_2pct": 1.02, "off_2x": 2.0, "sign_flip": -1.0}

KINDS = ("off_2pct", "off_2x", "sign_flip", "transposed", "dropped_term", "no_zero_grad",
         "unused_param", "frozen_in_optimizer")


def factor(twin: str | None) -> float:
    """The factor a twin's wrong backward multiplies the right one by (1 for the others)."""
    return FACTOR.get(twin or "", 1.0)


def bend(t: torch.Tensor, twin: str | None) -> torch.Tensor:
    """For a factor twin: the gradient flowing back through ``t`` is scaled by a hook (the
    mistake of a hand-written gradient hook); otherwise nothing. Returns ``t``."""
    if twin in FACTOR and t.requires_grad:
        f = FACTOR[twin]
        t.register_hook(lambda g: g * f)
    return t
