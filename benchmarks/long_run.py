"""The long run of issue 13: 30,000 steps of a 5-parameter model (control flow, momentum SGD).

    python benchmarks/long_run.py                     # record once (cached), then read it
    python benchmarks/long_run.py --steps 3000 --rounds 1
    python benchmarks/long_run.py --trace PATH        # read a trace recorded elsewhere
    python benchmarks/long_run.py --code ../main      # time another checkout (before/after)
    python benchmarks/long_run.py --overhead          # the recording side: CPU and RSS ratios
    python benchmarks/long_run.py --overhead --steps 3000 --options '{"full": true}'

The model (:func:`model`) is a piecewise curve fit, a branch on the data as a lecture's
"control flow" example: y = a*x^2 + b*x + c where x > 0, d*x + e elsewhere; five scalar
parameters, momentum SGD. The one benchmark of the long run, both sides:

- reading (the default): the run is recorded once with the default options into
  ``benchmarks/.cache/`` (reused while the model and the recorded script are unchanged);
  then each command runs as a user runs it, ``python -m gradtrace CMD TRACE`` in a fresh
  process, ``--rounds`` times. Printed: the trace's size, and per command the wall and CPU
  time (medians) and the peak RSS of the process (its own rusage, from ``os.wait4``).
- ``--overhead``: each way runs in a fresh interpreter (so peak memory is its own): plain
  python, then ``gradtrace.trace()`` around the same loop, alternating, ``--rounds`` times.
  Printed: CPU time of the loop (medians) and its ratio, the trace's size, and the peak RSS
  of each process and their ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"


def model():
    """The long-run model, built (seeded) and ready: ``(loop, params)``; ``loop(steps)`` trains
    it and returns the last loss."""
    import torch

    torch.manual_seed(0)
    x = torch.randn(16)
    y = torch.where(x > 0, 0.5 * x ** 2 - x + 1, 2 * x + 1) + 0.01 * torch.randn(16)
    a, b, c, d, e = (torch.zeros((), requires_grad=True) for _ in range(5))
    opt = torch.optim.SGD([a, b, c, d, e], lr=0.01, momentum=0.9)

    def loop(steps: int):
        loss = None
        for i in range(steps):
            opt.zero_grad()
            pos = x > 0
            if bool(pos.any()):
                pred = torch.where(pos, a * x ** 2 + b * x + c, d * x + e)
            else:
                pred = d * x + e
            loss = ((pred - y) ** 2).mean()
            loss.backward()
            opt.step()
        return loss

    return loop, (a, b, c, d, e)


#: The script recorded: this file's model (one definition for both sides).
SCRIPT = f'''
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from long_run import model

loop, _ = model()
print("final loss", float(loop(int(sys.argv[1]))))
'''
MODEL_SOURCE = inspect.getsource(model)

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


def timed(argv: list[str]) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MB, exit code, CPU seconds) of one fresh process (its own
    rusage: the CPU time says less about what else the machine runs than the wall time)."""
    t0 = time.perf_counter()
    # in the checkout timed: `python -m` puts the working directory first on sys.path
    proc = subprocess.Popen(argv, env=_env(), cwd=CODE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 3):  # 3: a failed check is a result, not a failure
        print(f"  {' '.join(argv[3:4])} exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def child(steps: int, trace_path: str | None, options: dict) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    train, (a, b, c, d, e) = model()

    def loop():
        train(steps)

    t0 = time.process_time()
    if trace_path is None:
        loop()
    else:
        import gradtrace

        known = gradtrace.Config.__dataclass_fields__
        with gradtrace.trace(trace_path, **{k: v for k, v in options.items() if k in known}):
            loop()
    cpu = time.process_time() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = os.path.getsize(trace_path) / 1e6 if trace_path else 0.0
    print(json.dumps({"cpu": cpu, "rss": rss, "size": size, "params": [a.item(), b.item()]}))


def run_child(steps, path, options):
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps), "--options", json.dumps(options)]
    if path:
        cmd += ["--trace", path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def overhead(args, options: dict) -> None:
    """The recording side: plain and traced runs of the loop, alternating."""
    plain, traced = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            plain.append(run_child(args.steps, None, options))
            traced.append(run_child(args.steps, str(Path(tmp) / "long.gtrace"), options))
    assert all(p["params"] == t["params"] for p, t in zip(plain, traced)), "tracing changed the run"
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"{args.steps:,} steps, options {options or 'default'}, median of {args.rounds}: CPU plain "
          f"{med(plain, 'cpu'):.1f} s, traced {med(traced, 'cpu'):.1f} s ({med(traced, 'cpu') / med(plain, 'cpu'):.2f}x); "
          f"trace {med(traced, 'size'):.1f} MB; peak RSS plain {med(plain, 'rss'):.0f} MB, traced "
          f"{med(traced, 'rss'):.0f} MB ({med(traced, 'rss') / med(plain, 'rss'):.2f}x)", flush=True)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trace", help="read this trace instead of recording one")
    ap.add_argument("--only", nargs="*", choices=sorted(COMMANDS), help="commands to time")
    ap.add_argument("--code", type=Path, default=ROOT, help="the gradtrace checkout to time")
    ap.add_argument("--overhead", action="store_true", help="time the recording side instead")
    ap.add_argument("--options", default="{}", help='--overhead: JSON options of gradtrace.trace, e.g. \'{"full": true}\'')
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child or args.overhead:
        options = json.loads(args.options)
        if args.child:
            child(args.steps, args.trace, options)
        else:
            overhead(args, options)
        return
    global CODE
    CODE = args.code.resolve()
    path = Path(args.trace).resolve() if args.trace else record(args.steps)
    print(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB, read by {CODE}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        for name in args.only or COMMANDS:
            argv = [sys.executable, "-m", "gradtrace", COMMANDS[name][0], str(path),
                    *(a.format(out=out) for a in COMMANDS[name][1:])]
            runs = [timed(argv) for _ in range(args.rounds)]
            wall = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            cpu = statistics.median(r[3] for r in runs)
            print(f"{name:>8}: {wall:6.1f} s wall, {cpu:6.1f} s CPU (medians of {args.rounds}), "
                  f"peak RSS {rss:.0f} MB, exit {runs[-1][2]}", flush=True)


if __name__ == "__main__":
    main()
