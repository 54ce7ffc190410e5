"""Recording overhead: traced / untraced time per step, interleaved in one process, medians.

    python benchmarks/overhead.py            # all cases
    python benchmarks/overhead.py a --rounds 7
    python benchmarks/overhead.py rss        # memory over 10,000 recorded steps
    python benchmarks/overhead.py calls      # where the time goes: each torch call, recorded vs bare

Cases (each timed untraced and traced in alternation, so machine noise hits both alike):
  a  the d2l scratch loop (seed 1): 3 epochs of 100 minibatches of 10, hand-written SGD
  b  the concise loop (seed 2): nn.Linear, MSELoss, optim.SGD, DataLoader, 3 epochs
  c  a 200,000 x 256 linear model, batch 1024, one epoch through a DataLoader
Each traced unit is one whole run recorded into one trace file, as `gradtrace run` records
a script: the fixed costs of a trace (creating the file, starting the writing process,
closing it at the end) are in the numbers, spread over the run's steps.
Recording modes: default (the recording policy: these runs of 300 small steps are all
recorded in full under the default budget), full (every step in full), stats only, every
10th step.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gradtrace  # noqa: E402


def median(xs):
    return statistics.median(xs)


# -- the workloads: each returns a function that runs N steps and returns N -------------------
def case_a():
    torch.manual_seed(0)
    random.seed(0)
    X_all = torch.normal(0, 1, (1000, 2))
    y_all = (X_all @ torch.tensor([2, -3.4]) + 4.2).reshape(-1, 1)
    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)

    def data_iter():
        idx = list(range(1000))
        random.shuffle(idx)
        for i in range(0, 1000, 10):
            j = torch.tensor(idx[i:i + 10])
            yield X_all[j], y_all[j]

    def run():
        n = 0
        for _ in range(3):
            for X, y in data_iter():
                l = ((torch.matmul(X, w) + b - y.reshape(-1, 1)) ** 2 / 2)
                l.sum().backward()
                with torch.no_grad():
                    for p in (w, b):
                        p -= 0.03 * p.grad / 10
                        p.grad.zero_()
                n += 1
        return n

    return run


def case_b():
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    X_all = torch.normal(0, 1, (1000, 2))
    y_all = (X_all @ torch.tensor([2, -3.4]) + 4.2).reshape(-1, 1)
    loader = DataLoader(TensorDataset(X_all, y_all), batch_size=10, shuffle=True)
    net = nn.Sequential(nn.Linear(2, 1))
    loss = nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.03)

    def run():
        n = 0
        for _ in range(3):
            for X, y in loader:
                l = loss(net(X), y)
                opt.zero_grad()
                l.backward()
                opt.step()
                n += 1
        return n

    return run


def case_c():
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    X_all = torch.randn(200_000, 256)
    y_all = X_all @ torch.randn(256, 1) + 0.1 * torch.randn(200_000, 1)
    loader = DataLoader(TensorDataset(X_all, y_all), batch_size=1024, shuffle=True)
    net = nn.Linear(256, 1)
    loss = nn.MSELoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def run():
        n = 0
        for X, y in loader:
            opt.zero_grad()
            loss(net(X), y).backward()
            opt.step()
            n += 1
        return n

    return run


CASES = {"a": ("d2l scratch loop", case_a), "b": ("concise loop (nn, DataLoader)", case_b),
         "c": ("200,000x256 linear, batch 1024", case_c)}
MODES = {"default": {}, "full": {"full": True}, "stats": {"values": "stats", "full": True},
         "every10": {"every": 10, "full": True}}


def timed(run, options, tmp):
    if options is None:
        t0 = time.perf_counter()
        n = run()
        return (time.perf_counter() - t0) / n
    path = Path(tmp) / "bench.gtrace"
    t0 = time.perf_counter()
    with gradtrace.trace(path, **options):
        n = run()
    return (time.perf_counter() - t0) / n


def bench(case: str, rounds: int, modes: list[str]):
    label, make = CASES[case]
    run = make()
    with tempfile.TemporaryDirectory() as tmp:
        timed(run, None, tmp)  # warm up: first calls allocate and load kernels
        timed(run, MODES[modes[0]], tmp)
        plain: list[float] = []
        traced: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(rounds):
            for m in modes:  # interleaved: plain, traced, plain, traced...
                gc.collect()
                plain.append(timed(run, None, tmp))
                gc.collect()
                traced[m].append(timed(run, MODES[m], tmp))
    base = median(plain)
    for m in modes:
        t = median(traced[m])
        print(f"({case}) {label:34s} {m:8s} untraced {base * 1e6:9.1f} us/step   "
              f"traced {t * 1e6:9.1f} us/step   ratio {t / base:5.2f}x", flush=True)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss(steps: int):
    """RSS while recording `steps` steps of the d2l loop to a file: flat means streamed."""
    torch.manual_seed(0)
    X = torch.randn(10, 2)
    y = torch.randn(10, 1)
    w = torch.zeros(2, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    marks = {}
    with tempfile.TemporaryDirectory() as tmp:
        with gradtrace.trace(Path(tmp) / "rss.gtrace"):
            for i in range(steps):
                l = ((X @ w + b - y) ** 2 / 2).sum()
                l.backward()
                with torch.no_grad():
                    w -= 0.01 * w.grad
                    b -= 0.01 * b.grad
                    w.grad.zero_()
                    b.grad.zero_()
                if i + 1 in (1000, steps // 2, steps):
                    gc.collect()
                    marks[i + 1] = rss_mb()
        size = os.path.getsize(Path(tmp) / "rss.gtrace") / 1e6
    first = marks[1000]
    for k, v in marks.items():
        print(f"rss after {k:6d} recorded steps: {v:7.1f} MB")
    print(f"rss growth from step 1,000 to {steps:,}: {marks[steps] - first:+.1f} MB "
          f"(trace file {size:.1f} MB)")


def calls(case: str = "a"):
    """Per kind of torch call of one case: its median time inside gradtrace's handler, next
    to the same call under a pass-through TorchFunctionMode (the cost of seeing it at all)."""
    import collections

    from torch.overrides import TorchFunctionMode

    from gradtrace.record import mode as R

    run = CASES[case][1]()
    run()
    pc = time.perf_counter
    seen: dict = collections.defaultdict(list)
    bare: dict = collections.defaultdict(list)
    handler = R.Mode.__torch_function__

    def timed_handler(self, func, types, args=(), kwargs=None):
        t0 = pc()
        try:
            return handler(self, func, types, args, kwargs)
        finally:
            seen[getattr(func, "__qualname__", repr(func))].append(pc() - t0)

    class Bare(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            t0 = pc()
            try:
                return func(*args, **(kwargs or {}))
            finally:
                bare[getattr(func, "__qualname__", repr(func))].append(pc() - t0)

    R.Mode.__torch_function__ = timed_handler
    try:
        steps = 0
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(3):
                with Bare():
                    run()
                with gradtrace.trace(Path(tmp) / "calls.gtrace"):
                    steps += run()
    finally:
        R.Mode.__torch_function__ = handler
    print(f"({case}) {'torch call':40s} {'per step':>8s} {'recorded':>10s} {'bare mode':>10s} {'extra/step':>11s}")
    total = 0.0
    for name, ts in sorted(seen.items(), key=lambda kv: -sum(kv[1])):
        b = median(bare[name]) if bare.get(name) else 0.0
        per_step = len(ts) / steps
        extra = (median(ts) - b) * per_step
        total += extra
        print(f"    {name:40s} {per_step:8.2f} {median(ts) * 1e6:8.1f}us {b * 1e6:8.1f}us "
              f"{extra * 1e6:9.1f}us")
    print(f"    {'recording work per step (medians)':40s} {'':8s} {'':10s} {'':10s} {total * 1e6:9.1f}us")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=["a", "b", "c", "rss"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", default="default,full,stats,every10")
    ap.add_argument("--steps", type=int, default=10_000, help="steps for the rss case")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} "
          "interleaved rounds")
    for c in args.cases:
        if c == "rss":
            rss(args.steps)
        elif c == "calls":
            calls()
        else:
            bench(c, args.rounds, args.modes.split(","))


if __name__ == "__main__":
    main()
