"""A long run: 30,000 steps of a 5-parameter model with control flow and momentum SGD.

    python benchmarks/longrun.py                 # 30,000 steps, default options
    python benchmarks/longrun.py --steps 3000 --options full=True

Each way runs in a fresh interpreter (so peak memory is its own): plain python, then
gradtrace.trace() around the same loop, alternating, ``--rounds`` times. Printed: CPU time
of the loop (medians) and its ratio, the trace's size, and peak RSS of each process and
their ratio. The model is a piecewise curve fit (a branch on the data, as a lecture's
"control flow" example): y = a*x^2 + b*x + c where x > 0, d*x + e elsewhere.
"""

from __future__ import annotations

import argparse
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


def model():
    """The long-run model, built (seeded) and ready: ``(loop, params)``; ``loop(steps)`` trains
    it and returns the last loss. benchmarks/long_run.py records this same model."""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--options", default="{}", help='JSON options of gradtrace.trace, e.g. \'{"full": true}\'')
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--trace")
    args = ap.parse_args()
    options = json.loads(args.options)
    if args.child:
        child(args.steps, args.trace, options)
        return
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


if __name__ == "__main__":
    main()
