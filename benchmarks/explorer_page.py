"""The explorer page (report.html): its size, the steps it holds, the time to build it and the
time headless Chromium takes to draw it.

    python benchmarks/explorer_page.py                      # linreg, gd_backprop, mlp 30,000
    python benchmarks/explorer_page.py linreg --rounds 3
    python benchmarks/explorer_page.py mlp --steps 10000
    python benchmarks/explorer_page.py --trace PATH         # a trace recorded elsewhere
    python benchmarks/explorer_page.py --code ../main       # another checkout (before/after)

Runs: ``linreg`` and ``gd_backprop`` (demos/, default options) and ``mlp``: a 3-layer MLP
(``nn.Linear(3, 8)``, tanh, ``nn.Linear(8, 1)``, a fixed batch of 64, SGD) recorded with
``--full`` (every step in full). Each is recorded once into ``benchmarks/.cache/`` and reused
while the script is unchanged. Printed per run: the steps held in full of those recorded, the
page's bytes, its build time once the check has run (steps read, graphs laid out, page
written) and the time from navigation to a drawn page in headless Chromium (median of
``--rounds``), as the browser tests open it (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

MLP = '''
import sys
import torch
from torch import nn

torch.manual_seed(0)
X = torch.randn(64, 3)
y = (X[:, :1] * 2 - X[:, 1:2] + 0.5 * X[:, 2:]).tanh()
model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss()
for step in range(int(sys.argv[1])):
    opt.zero_grad()
    loss = loss_fn(model(X), y)
    loss.backward()
    opt.step()
print("final loss", float(loss))
'''

CODE = ROOT  # the gradtrace checkout measured (--code)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(CODE), OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def record(name: str, steps: int) -> Path:
    """The trace of run ``name`` (recorded now unless cached)."""
    if name == "mlp":
        source, args, options = MLP, [str(steps)], ["--full"]
    else:
        source, args, options = (ROOT / "demos" / f"{name}.py").read_text(), [], []
    key = hashlib.sha256(f"{source}{args}{options}".encode()).hexdigest()[:12]
    path = CACHE / f"explorer-{name}{'-' + str(steps) if args else ''}-{key}.gtrace"
    if path.exists():
        return path
    CACHE.mkdir(exist_ok=True)
    script = CACHE / f"explorer_{name}.py"
    script.write_text(source)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gradtrace", "run", "--no-report", "--no-animate",
                    *options, "-o", str(path), str(script), *args], check=True, env=_env(),
                   cwd=CACHE, stdout=subprocess.DEVNULL)
    print(f"recorded {name} in {time.perf_counter() - t0:.0f} s: {path.name} "
          f"({path.stat().st_size / 1e6:.0f} MB)", flush=True)
    return path


BUILD = '''
import json, sys, time
import gradtrace
print(gradtrace.__file__, file=sys.stderr)
from gradtrace.render.explorer import page_of
t = gradtrace.load(sys.argv[1])
report = t.check()
t0 = time.perf_counter()
page = page_of(t, report)
build = time.perf_counter() - t0
open(sys.argv[2], "w", encoding="utf-8").write(page)
data = json.loads(page.split('id="gt-data">', 1)[1].split("</script>", 1)[0])
print(json.dumps({"build": build, "held": len(data["held"]), "recorded": len(t.steps),
                  "bytes": len(page.encode())}))
'''


def load_times(page: Path, rounds: int) -> list[float]:
    """Seconds from navigation to ``data-ready`` (the first step drawn), each in a new tab."""
    from playwright.sync_api import sync_playwright

    out = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM,
                                                   args=CHROMIUM_ARGS, headless=True)
        try:
            for _ in range(rounds):
                tab = ctx.new_page()
                tab.set_viewport_size({"width": 1366, "height": 768})
                t0 = time.perf_counter()
                tab.goto(page.as_uri())
                tab.wait_for_selector("html[data-ready='1']", timeout=120000)
                out.append(time.perf_counter() - t0)
                tab.close()
        finally:
            ctx.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", default=["linreg", "gd_backprop", "mlp"])
    ap.add_argument("--steps", type=int, default=30_000, help="steps of the mlp run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trace", help="measure this trace instead")
    ap.add_argument("--code", type=Path, default=ROOT, help="the gradtrace checkout to measure")
    ap.add_argument("--keep", type=Path, help="write the pages into this folder")
    args = ap.parse_args()
    global CODE
    CODE = args.code.resolve()
    todo = [(Path(args.trace).stem, Path(args.trace))] if args.trace else \
        [(name, record(name, args.steps)) for name in args.runs]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, trace in todo:
            page = folder / f"{name}.html"
            # cwd: not a checkout, so the gradtrace imported is CODE's (python -c puts cwd first)
            res = subprocess.run([sys.executable, "-c", BUILD, str(trace.resolve()), str(page.resolve())],
                                 env=_env(), check=True, capture_output=True, text=True, cwd=tmp)
            m = json.loads(res.stdout.strip().splitlines()[-1])
            load = statistics.median(load_times(page, args.rounds))
            print(f"{name:>12}: held {m['held']:,} of {m['recorded']:,} steps, page "
                  f"{m['bytes'] / 1e6:.1f} MB, build {m['build']:.1f} s, load {load:.2f} s "
                  f"(median of {args.rounds})", flush=True)


if __name__ == "__main__":
    main()
