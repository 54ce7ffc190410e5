"""What a user waits for: `gradtrace run SCRIPT` against `python SCRIPT`, wall clock.

    python benchmarks/run_wall.py                       # demos/linreg.py, 5 rounds
    python benchmarks/run_wall.py --rounds 9 demos/linreg.py
    python benchmarks/run_wall.py --also=--animate      # and `gradtrace run --animate`
    python benchmarks/run_wall.py --gifs                # each GIF: seconds, frames, bytes

Each round runs every command once, in a new interpreter, in an order that rotates from
round to round (interleaved: a busy spell on a shared machine hits every command alike);
the table gives each command's median wall-clock and CPU seconds (the child's user + system
time, less disturbed by other work) and its ratio to plain python. The target of issue 13
is `gradtrace run demos/linreg.py` within 2.5x of `python demos/linreg.py` with default
options.

``--gifs`` renders the two animations of the recorded trace in this process (median of
the rounds) and prints seconds, frames and bytes of each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd`` in a child process, its output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def gifs(trace_path: Path, out: Path, rounds: int) -> None:
    """Each animation of the trace rendered ``rounds`` times in this process: median seconds."""
    sys.path.insert(0, str(ROOT))
    import gradtrace
    from gradtrace.render.animate import animation_of_trace

    trace = gradtrace.load(trace_path)
    print(f"{'animation':<12}{'frames':>7}{'wall s':>9}{'cpu s':>8}{'bytes':>11}")
    for kind in ("backprop", "training"):
        walls, cpus = [], []
        for _ in range(rounds):
            w0, c0 = time.perf_counter(), time.process_time()
            anim = animation_of_trace(trace, kind=kind)
            path = anim.save(out / f"{kind}.gif")
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        print(f"{kind:<12}{len(anim):>7}{statistics.median(walls):>9.2f}{statistics.median(cpus):>8.2f}"
              f"{path.stat().st_size:>11,}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("script", nargs="?", default="demos/linreg.py")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are shown)")
    ap.add_argument("--also", default="", metavar="OPTIONS",
                    help="also time `gradtrace run OPTIONS SCRIPT` (e.g. --also=--animate)")
    ap.add_argument("--gifs", action="store_true", help="time each GIF of the recorded trace too")
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        commands = {
            "python": [sys.executable, args.script],
            "gradtrace run": [sys.executable, "-m", "gradtrace", "run", "-o", str(out / "a" / "trace.gtrace"),
                              args.script],
        }
        if args.also:
            commands["gradtrace run " + args.also] = [
                sys.executable, "-m", "gradtrace", "run", *args.also.split(), "-o",
                str(out / "b" / "trace.gtrace"), args.script]
        names = list(commands)
        times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                times[name].append(timed(commands[name], env))
        base_wall = statistics.median(w for w, _ in times["python"])
        base_cpu = statistics.median(c for _, c in times["python"])
        print(f"{args.script}, {args.rounds} interleaved rounds, medians")
        print(f"{'command':<36}{'wall s':>8}{'x':>7}{'cpu s':>8}{'x':>7}")
        for name in names:
            wall = statistics.median(w for w, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            print(f"{name:<36}{wall:>8.2f}{wall / base_wall:>7.2f}{cpu:>8.2f}{cpu / base_cpu:>7.2f}")
        if args.gifs:
            gifs(out / "a" / "trace.gtrace", out, max(1, min(args.rounds, 3)))
    print(f"(load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
