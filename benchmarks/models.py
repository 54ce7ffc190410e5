"""Recording cost on three real model shapes, with peers measured side by side in one process.

    python benchmarks/models.py                       # mlp cnn transformer, 3 rounds
    python benchmarks/models.py transformer --rounds 5 --steps 200

Models (the issue 13 set; each a training loop as the PyTorch tutorials write it:
``opt.zero_grad(); loss_fn(model(X), y).backward(); opt.step()``, synthetic data):
  mlp          784-256-256-10 with ReLU, Adam, batch 128, cross-entropy
  cnn          two 3x3 conv layers (8, 16 channels) + max-pool + linear on 1x28x28, SGD momentum, batch 64
  transformer  one nn.TransformerEncoderLayer d_model 64, 4 heads, seq 32, batch 16, AdamW, MSE

Columns, each a ratio to the untraced loop, all timed interleaved (plain, then each way in
turn, every round), medians of CPU time per step (one torch thread):
  default      gradtrace.trace() with default options (the recording policy)
  full         gradtrace.trace(full=True): every step in full
  make_dot     a torchviz-style graph: after the forward, the grad_fn graph walked into DOT text
  watch        a wandb.watch-style baseline: a hook on every parameter's gradient taking a
               64-bin histogram and its range back to Python, every step
  torchlens    TorchLens' trace() of the forward with its activations saved, every step
               (only where torchlens is installed)
The peer baselines are written here (no network, nothing logged anywhere); each is what that
tool does per step at its most thorough setting, so the columns compare like with like.
Also printed: the trace's size per step for default and full.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gradtrace  # noqa: E402


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                          nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    X, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    return model, opt, nn.CrossEntropyLoss(), X, y


def cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    X, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    return model, opt, nn.CrossEntropyLoss(), X, y


def transformer():
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True,
                                       dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    X = torch.randn(16, 32, 64)
    return model, opt, nn.MSELoss(), X, torch.randn(16, 32, 64)


MODELS = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


def train(model, opt, loss_fn, X, y, steps, each=None):
    for _ in range(steps):
        opt.zero_grad()
        out = model(X)
        loss = loss_fn(out, y)
        if each is not None:
            each(model, X, out, loss)
        loss.backward()
        opt.step()


# -- the peers ---------------------------------------------------------------------------------
def make_dot(model, X, out, loss):
    """What torchviz.make_dot does: walk the grad_fn graph from the output, label each node
    (a parameter's name and size for AccumulateGrad), and build the DOT source."""
    names = {id(p): n for n, p in model.named_parameters()}
    lines, seen, todo = ["digraph {"], set(), [loss.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        label = f"{names.get(id(var), '')}\n{tuple(var.shape)}" if var is not None else type(fn).__name__
        lines.append(f'  "{id(fn)}" [label="{label}"]')
        for nxt, _ in fn.next_functions:
            if nxt is not None:
                lines.append(f'  "{id(nxt)}" -> "{id(fn)}"')
                todo.append(nxt)
    lines.append("}")
    return "\n".join(lines)


class Watch:
    """What wandb.watch(model, log="gradients", log_freq=1) does each step: a hook on each
    parameter that takes its gradient's 64-bin histogram and range back to Python."""

    def __init__(self, model):
        self.logged: list = []
        self.handles = [p.register_hook(self._hook(n)) for n, p in model.named_parameters()]

    def _hook(self, name):
        def hook(g):
            g = g.detach().float()
            lo, hi = g.min().item(), g.max().item()
            self.logged.append((name, lo, hi, torch.histc(g, 64, lo, hi).tolist()))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def torchlens_trace():
    try:
        import torchlens
    except ImportError:
        return None

    def each(model, X, out, loss):
        torchlens.trace(model, X)  # every activation of the forward, saved

    return each


# -- timing -----------------------------------------------------------------------------------
def cpu_per_step(fn, steps):
    t0 = time.process_time()
    fn()
    return (time.process_time() - t0) / steps


def bench(name, steps, rounds, tl_steps, only=None):
    parts = MODELS[name]()
    model, opt, loss_fn, X, y = parts
    tl_each = torchlens_trace()
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def plain():
            train(*parts, steps)

        def traced(**options):
            def go():
                path = Path(tmp) / "t.gtrace"
                known = gradtrace.Config.__dataclass_fields__  # an older gradtrace: no `full`
                with gradtrace.trace(path, **{k: v for k, v in options.items() if k in known}):
                    train(*parts, steps)
                sizes["full" if options else "default"] = path.stat().st_size / steps
            return go

        def dot():
            train(*parts, steps, each=make_dot)

        def watch():
            w = Watch(model)
            try:
                train(*parts, steps)
            finally:
                w.remove()

        ways = {"default": (traced(), steps), "full": (traced(full=True), steps),
                "make_dot": (dot, steps), "watch": (watch, steps)}
        if tl_each is not None:
            ways["torchlens"] = ((lambda: train(*parts, tl_steps, each=tl_each)), tl_steps)
        if only:
            ways = {k: v for k, v in ways.items() if k in only}
        for fn, n in [(plain, steps), *ways.values()]:  # warm up
            fn()
        base: list[float] = []
        got: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(rounds):
            for k, (fn, n) in ways.items():
                gc.collect()
                base.append(cpu_per_step(plain, steps))
                gc.collect()
                got[k].append(cpu_per_step(fn, n))
    b = statistics.median(base)
    cols = "  ".join(f"{k} {statistics.median(v) / b:5.2f}x" for k, v in got.items())
    per_step = ", ".join(f"{k} {v / 1024:6.1f} KiB" for k, v in sizes.items())
    print(f"{name:12s} untraced {b * 1e3:7.2f} ms/step  {cols}  trace/step: {per_step}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=list(MODELS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="steps per timed unit")
    ap.add_argument("--torchlens-steps", type=int, default=5)
    ap.add_argument("--ways", default="", help="only these columns, comma-separated "
                    "(default, full, make_dot, watch, torchlens); default: all")
    args = ap.parse_args()
    only = {w for w in args.ways.split(",") if w}
    unknown = only - {"default", "full", "make_dot", "watch", "torchlens"}
    if unknown:
        ap.error(f"unknown --ways: {', '.join(sorted(unknown))}")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, CPU time, median of {args.rounds} interleaved "
          f"rounds of {args.steps} steps", flush=True)
    for m in args.models:
        bench(m, args.steps, args.rounds, args.torchlens_steps, only)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
