"""Conveniences such as ``trace.check()`` and ``step.graph()`` dispatch through here to upper layers.

The trace file layer may not import analysis or render. The facade (``gradtrace/__init__.py``,
always imported first as the parent package) registers the implementations at import time;
each implementation imports its layer on use, so registering costs nothing.
"""

from __future__ import annotations

from typing import Any, Callable

_IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {}

NAMES = ("check", "animate", "graph", "explore", "html")


def register(name: str, fn: Callable[..., Any]) -> None:
    """Make ``name`` (one of NAMES) call ``fn``; the facade does this once for each."""
    if name not in NAMES:
        raise ValueError(f"unknown convenience {name!r}; expected one of {', '.join(NAMES)}")
    _IMPLEMENTATIONS[name] = fn


def html(obj: Any) -> str | None:
    """``obj._repr_html_()`` for Jupyter: the registered HTML, or None (never an exception:
    Jupyter then shows the plain repr)."""
    try:
        return call("html", obj)
    except Exception:  # noqa: BLE001 - a repr must not raise
        return None


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    try:
        fn = _IMPLEMENTATIONS[name]
    except KeyError:
        # Invariant: importing any gradtrace module imports the facade first, which registers.
        raise RuntimeError(f"gradtrace: {name}() is not registered; `import gradtrace` registers it") from None
    return fn(*args, **kwargs)
