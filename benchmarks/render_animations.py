"""Seconds to render the animations of the seed runs, with the default options.

    python benchmarks/render_animations.py            # seeds 1 and 5
    python benchmarks/render_animations.py --repeat 3 # the median of three renders
    python benchmarks/render_animations.py --trace path/to/trace.gtrace

Seed 1 (demos/linreg.py, 300 steps) is the goal case: the training animation in under 30 s
and the backprop explainer in under 10 s on 2 cores. Seed 5 (demos/gd_backprop.py, 3000
steps) shows that a long run stays bounded: it is read and subsampled to the frame budget.
Each line gives wall-clock seconds (what a user waits) and this process's CPU seconds (less
disturbed by other work on a shared machine), split into preparing (reading the trace,
the series, the loss surface) and rendering + writing the GIF.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import gradtrace  # noqa: E402
from gradtrace.render.animate import animation_of_trace  # noqa: E402

GOALS = {("linreg", "training"): 30.0, ("linreg", "backprop"): 10.0}


def record(demo: str, out: Path):
    argv = sys.argv
    sys.argv = [str(ROOT / "demos" / f"{demo}.py")]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            with gradtrace.trace(out):
                runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    return gradtrace.load(out)


def render(trace, kind: str, out: Path) -> dict:
    w0, c0 = time.perf_counter(), time.process_time()
    anim = animation_of_trace(trace, kind=kind)
    w1, c1 = time.perf_counter(), time.process_time()
    anim.save(out)
    w2, c2 = time.perf_counter(), time.process_time()
    return {"frames": len(anim), "prepare": w1 - w0, "wall": w2 - w0, "cpu": c2 - c0,
            "mb": out.stat().st_size / 1e6, "note": anim.note}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="renders per case (the median is shown)")
    ap.add_argument("--trace", help="time this trace instead of the seed runs")
    ap.add_argument("--seeds", default="linreg,gd_backprop", help="demos to record and render")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        if args.trace:
            cases = [("trace", gradtrace.load(args.trace))]
        else:
            cases = []
            for demo in args.seeds.split(","):
                t0 = time.perf_counter()
                trace = record(demo, d / f"{demo}.gtrace")
                print(f"recorded {demo}: {len(trace.steps)} steps in {time.perf_counter() - t0:.1f} s")
                cases.append((demo, trace))
        print(f"{'case':<24}{'frames':>7}{'prepare s':>11}{'wall s':>9}{'cpu s':>8}{'GIF MB':>8}  goal")
        for name, trace in cases:
            for kind in ("training", "backprop"):
                runs = [render(trace, kind, d / f"{name}-{kind}.gif") for _ in range(args.repeat)]
                r = {k: statistics.median(x[k] for x in runs) if k not in ("note",) else runs[0][k]
                     for k in runs[0]}
                goal = GOALS.get((name, kind))
                verdict = "" if goal is None else f"< {goal:.0f} s: {'yes' if r['wall'] < goal else 'NO'}"
                print(f"{name + ' ' + kind:<24}{r['frames']:>7}{r['prepare']:>11.2f}{r['wall']:>9.2f}"
                      f"{r['cpu']:>8.2f}{r['mb']:>8.2f}  {verdict}")
    print(f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
