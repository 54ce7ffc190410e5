"""Graph rendering time: one d2l step (seed 1) to SVG, medians over interleaved rounds.

    python benchmarks/render_graph.py              # 15 rounds
    python benchmarks/render_graph.py --rounds 31

Times, per round, with a fresh picture object (nothing cached):
  model   the graph model alone (analysis.graph.build_graph, view both)
  dot     model + DOT text
  svg     model + DOT + layout and SVG through the engine `auto` picks (the number to quote)
  svg/mpl the same through the matplotlib fallback
The first SVG of the process (library loading, font set-up) is reported on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import runpy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gradtrace  # noqa: E402
from gradtrace.analysis.graph import build_graph  # noqa: E402
from gradtrace.render.graph import available_engine, graph_of_step, to_dot  # noqa: E402


def d2l_step():
    """Step 0 of demos/linreg.py, recorded in this process (only that step is recorded)."""
    argv = sys.argv
    sys.argv = [str(ROOT / "demos" / "linreg.py")]
    try:
        with contextlib.redirect_stdout(io.StringIO()), gradtrace.trace(step_range=(0, 1)) as t:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    return t.result.steps[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    step = d2l_step()
    engine = available_engine()
    t0 = time.perf_counter()
    graph_of_step(step, view="both").svg()
    first = time.perf_counter() - t0
    cases = {
        "model": lambda: build_graph(step, view="both"),
        "dot": lambda: graph_of_step(step, view="both").dot,
        "svg": lambda: graph_of_step(step, view="both").svg(),
        "svg/mpl": lambda: graph_of_step(step, view="both", engine="matplotlib").svg(),
    }
    cases["svg/mpl"]()  # matplotlib's own first-use cost is not the fallback's steady state
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    model = build_graph(step, view="both")
    dot = to_dot(model, graph_of_step(step).options)
    print(f"d2l step 0, view both: {len(model)} nodes, {len(dot)} bytes of DOT; engine auto = {engine}")
    print(f"first svg of the process: {first * 1000:.0f} ms")
    for name, ts in times.items():
        print(f"{name:8s} median {statistics.median(ts) * 1000:7.1f} ms   "
              f"min {min(ts) * 1000:7.1f} ms   ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
