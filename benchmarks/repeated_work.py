"""Work done more than once in one `gradtrace run`: call counts of the expensive steps.

    python benchmarks/repeated_work.py                       # demos/linreg.py
    python benchmarks/repeated_work.py demos/linreg.py --no-animate

Runs ``gradtrace run SCRIPT`` in this process (``gradtrace.cli.main``, the trace in a
temporary folder) with counting wrappers around:
  check_trace     gradtrace.analysis.check.check_trace (the whole gradient check)
  recognize       gradtrace.analysis.linear.recognize (the linear model found in one step)
  read_step       gradtrace.tracefile.reader.Trace._read_step (one step parsed from the file)
  graph_of_step   gradtrace.render.graph.graph_of_step (one step's graph built)
  node_label      gradtrace.render.graph.node_label (one node's label made)
and prints each count with the run's wall time (read_step and graph_of_step also say the
most calls any one step got). Counts, not times, are the point: they do
not depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: name -> (module, attribute, class or None): what is counted.
COUNTED: dict[str, tuple[str, str, str | None]] = {
    "check_trace": ("gradtrace.analysis.check", "check_trace", None),
    "recognize": ("gradtrace.analysis.linear", "recognize", None),
    "read_step": ("gradtrace.tracefile.reader", "_read_step", "Trace"),
    "graph_of_step": ("gradtrace.render.graph", "graph_of_step", None),
    "node_label": ("gradtrace.render.graph", "node_label", None),
}

#: name -> the step number a call is about, from its arguments: also counted per step, as
#: ``"name@N"``.
PER_STEP: dict[str, Callable[..., Any]] = {
    "read_step": lambda trace, idx, *a, **k: idx,
    "graph_of_step": lambda step, *a, **k: getattr(step, "index", None),
}


def per_step(counts: Counter, name: str) -> dict[int, int]:
    """Step number -> calls of ``name`` about that step (for the names in :data:`PER_STEP`)."""
    head = f"{name}@"
    return {int(k[len(head):]): v for k, v in counts.items() if k.startswith(head)}


@contextlib.contextmanager
def counting() -> Iterator[Counter]:
    """Count the calls of :data:`COUNTED` while inside; every gradtrace module that imported
    one of those functions by name gets the counting wrapper too, and all is put back after."""
    counts: Counter = Counter()
    undo: list[tuple[Any, str, Any]] = []

    def wrap(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            if name in PER_STEP:
                counts[f"{name}@{PER_STEP[name](*args, **kwargs)}"] += 1
            return fn(*args, **kwargs)
        return counted

    try:
        for name, (modname, attr, cls) in COUNTED.items():
            mod = importlib.import_module(modname)
            owner = getattr(mod, cls) if cls else mod
            original = getattr(owner, attr)
            counts[name] = 0
            wrapper = wrap(name, original)
            targets = [owner] if cls else [m for m in list(sys.modules.values())
                                           if getattr(m, "__name__", "").startswith("gradtrace")
                                           and getattr(m, attr, None) is original]
            for t in targets:
                undo.append((t, attr, original))
                setattr(t, attr, wrapper)
        yield counts
    finally:
        for t, attr, original in reversed(undo):
            setattr(t, attr, original)


def _preload() -> None:
    """Import what `run` imports lazily, so that names bound at import are wrapped too."""
    for m in ("gradtrace.cli", "gradtrace.cli.run", "gradtrace.cli.graph", "gradtrace.cli.check",
              "gradtrace.cli.animate", "gradtrace.analysis.check", "gradtrace.analysis.training",
              "gradtrace.analysis.diagnostics", "gradtrace.render.report", "gradtrace.render.graph",
              "gradtrace.render.animate", "gradtrace.render.training", "gradtrace.render.backprop"):
        importlib.import_module(m)


def run_counted(script: str, *options: str, out_dir: str | Path | None = None) -> tuple[Counter, str, float]:
    """``gradtrace run -o DIR/trace.gtrace [options] SCRIPT`` in this process: the counts,
    gradtrace's stderr and the wall time in seconds."""
    from gradtrace.cli import main

    _preload()
    with contextlib.ExitStack() as stack:
        folder = Path(out_dir) if out_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        argv = ["run", "-o", str(folder / "trace.gtrace"), *options, script]
        err = io.StringIO()
        started = time.perf_counter()
        with counting() as counts, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit:
                pass
        return Counter(counts), err.getvalue(), time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("script", nargs="?", default=str(ROOT / "demos" / "linreg.py"))
    ap.add_argument("--no-animate", action="store_true", help="pass --no-animate to gradtrace run")
    ap.add_argument("--show-stderr", action="store_true", help="print gradtrace's own lines too")
    args = ap.parse_args(argv)
    counts, err, wall = run_counted(args.script, *(["--no-animate"] if args.no_animate else []))
    if args.show_stderr:
        print(err, end="")
    print(f"gradtrace run {Path(args.script).name}{' --no-animate' if args.no_animate else ''}: "
          f"{wall:.1f} s")
    for name in COUNTED:
        by_step = per_step(counts, name) if name in PER_STEP else {}
        most = f"  (at most {max(by_step.values())} per step)" if by_step else ""
        print(f"  {name:<14} {counts[name]:>6}{most}")


if __name__ == "__main__":
    main()
