"""Reading a long run: summary, check and report on a 30,000-step trace (time and peak RSS).

    python benchmarks/long_run.py                     # record once (cached), then read
    python benchmarks/long_run.py --steps 3000 --rounds 1
    python benchmarks/long_run.py --trace PATH        # read a trace recorded elsewhere
    python benchmarks/long_run.py --code ../main      # time another checkout (before/after)

The run is the long-run model of issue 13 (as in benchmarks/longrun.py, which measures the
recording side): a piecewise curve y = a*x^2 + b*x + c where x > 0, d*x + e elsewhere (a
branch on the data), five scalar parameters, momentum SGD. It is recorded once with the
default options into ``benchmarks/.cache/`` and reused while this file and longrun.py are
unchanged.

Each command then runs as a user runs it, ``python -m gradtrace CMD TRACE`` in a fresh
process, ``--rounds`` times; printed: wall time (median) and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"

#: The script recorded: benchmarks/longrun.py's model (one definition for both benchmarks).
SCRIPT = f'''
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from longrun import model

loop, _ = model()
print("final loss", float(loop(int(sys.argv[1]))))
'''
MODEL_SOURCE = (Path(__file__).resolve().parent / "longrun.py").read_text()

COMMANDS = {
    "summary": ["summary"],
    "check": ["check"],
    "report": ["report", "-o", "{out}/report.html"],
}


CODE = ROOT  # the gradtrace checkout whose commands are timed (--code)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(CODE), OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def record(steps: int) -> Path:
    """The trace of the run (recorded now unless a trace of this script and length is cached)."""
    key = hashlib.sha256(f"{SCRIPT}{MODEL_SOURCE}{steps}".encode()).hexdigest()[:12]
    path = CACHE / f"long_run-{steps}-{key}.gtrace"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    script = CACHE / "long_run_script.py"
    script.write_text(SCRIPT)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-report", "--no-animate",
                    "-o", str(path), str(script), str(steps)], check=True, env=_env(),
                   cwd=CACHE, stdout=subprocess.DEVNULL)
    print(f"recorded {steps:,} steps in {time.perf_counter() - t0:.0f} s: {path} "
          f"({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    return path


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 3):  # 3: a failed check is a result, not a failure
        print(f"  {' '.join(argv[3:4])} exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trace", help="read this trace instead of recording one")
    ap.add_argument("--only", nargs="*", choices=sorted(COMMANDS), help="commands to time")
    ap.add_argument("--code", type=Path, default=ROOT, help="the gradtrace checkout to time")
    args = ap.parse_args()
    global CODE
    CODE = args.code.resolve()
    path = Path(args.trace) if args.trace else record(args.steps)
    print(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB, read by {CODE}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        for name in args.only or COMMANDS:
            argv = [sys.executable, "-m", "gradtrace", COMMANDS[name][0], str(path),
                    *(a.format(out=out) for a in COMMANDS[name][1:])]
            runs = [timed(argv) for _ in range(args.rounds)]
            wall = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            print(f"{name:>8}: {wall:6.1f} s wall (median of {args.rounds}), peak RSS {rss:.0f} MB, "
                  f"exit {runs[-1][2]}", flush=True)


if __name__ == "__main__":
    main()
