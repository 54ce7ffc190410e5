"""The corpus of correct training scripts and their mutated twins (issue 12).

Each ``tests/corpus/<name>.py`` is a training script written for the tests in the idioms
of real code (the PyTorch tutorials, d2l, pytorch/examples): it runs with ``python`` as
it is, and its ``main(steps, twin)`` is what :func:`record` traces in-process. Next to
its code a script says

- ``STEPS``: how many steps :func:`record` runs by default (few: the checks cost more
  than the run);
- ``TWINS``: ``{kind: (param, params[, step])}`` for each mutation that makes sense for its
  code (kinds in ``_twin.KINDS``): the check must name ``param`` at ``step`` (0 for a wrong
  backward, 1 for a forgotten zero_grad, unless given), and may name only ``params``;
- ``NUMERIC`` (optional): the words of the reason the numeric check does not apply to
  its steps, where it cannot (random draws a replay cannot repeat).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import gradtrace

HERE = Path(__file__).resolve().parent
NAMES = tuple(sorted(p.stem for p in HERE.glob("[a-z]*.py")))

#: Where a twin's mistake first shows when the script does not say.
FIRST_STEP = {"no_zero_grad": 1}


@dataclass(frozen=True)
class Twin:
    """A mutation of one script and what the check must say about it."""

    script: str
    kind: str
    param: str                  # must be named ...
    step: int                   # ... at this step
    params: frozenset[str]      # the only parameters it may name

    @property
    def id(self) -> str:
        return f"{self.script}-{self.kind}"


@dataclass(frozen=True)
class Script:
    name: str
    steps: int
    twins: tuple[Twin, ...]
    numeric: str | None         # why the numeric check cannot apply, or None
    path: Path


_modules: dict[str, ModuleType] = {}


def module(name: str) -> ModuleType:
    """The script imported once (its directory on sys.path, for ``_twin``)."""
    if name not in _modules:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        spec = importlib.util.spec_from_file_location(f"corpus_{name}", HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _modules[name] = mod
    return _modules[name]


def script(name: str) -> Script:
    mod = module(name)
    twins = []
    for kind, spec in mod.TWINS.items():
        param, params, *step = spec
        twins.append(Twin(name, kind, param, step[0] if step else FIRST_STEP.get(kind, 0),
                          frozenset(params)))
    return Script(name, mod.STEPS, tuple(twins), getattr(mod, "NUMERIC", None),
                  HERE / f"{name}.py")


def scripts() -> list[Script]:
    return [script(n) for n in NAMES]


def twins() -> list[Twin]:
    return [t for s in scripts() for t in s.twins]


def record(name: str, twin: str | None = None, steps: int | None = None, path=None,
           **options) -> gradtrace.Trace:
    """Run the script's ``main`` under ``gradtrace.trace()`` (in-process) and return the trace."""
    mod = module(name)
    with gradtrace.trace(path, **options) as t:
        mod.main(steps=mod.STEPS if steps is None else steps, twin=twin)
    return t.result
