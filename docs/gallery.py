"""Regenerate the gallery (docs/gallery/, shown by docs/gallery.md) from the demos.

    python docs/gallery.py                          # every demo: a few minutes
    python docs/gallery.py linreg crop_yield        # only these demos
    python docs/gallery.py --what graph,backward    # only the graph pictures
    python docs/gallery.py --traces /tmp/gt         # keep the recordings, reuse them next time
    python docs/gallery.py --list                   # the demos and the files each one gets

Each demo is recorded as a user would record it, `gradtrace run demos/NAME.py` in a
fresh process (with the gradtrace of this checkout), then drawn from its trace:

    NAME-graph.svg       step 0, `both` view: values and gradients on the forward graph
    NAME-backward.svg    step 0, `backward` view: the grad_fn graph autograd walked
    NAME-backprop.gif    one step, back-propagation frame by frame
    NAME-training.gif    the run over time

The demos are seeded, and every picture is deterministic, so a re-run rewrites the same
bytes on the same machine; a diff in `git status` after a re-run is a change in what
gradtrace draws. The settings below keep the gallery to a few MB: the animations are
smaller than `gradtrace run`'s (fewer training frames, lower dpi); change them here, not
in the renderer.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "gallery"

#: The demos, in the order of demos/README.md: the lessons, then what goes wrong.
DEMOS = ("linreg", "linreg_concise", "crop_yield", "gd_backprop", "softmax_regression",
         "forgot_zero_grad", "exploding_lr", "custom_function")

#: What each demo gets; ``--what`` picks among these.
PICTURES = ("graph", "backward", "backprop", "training")

#: Graph options (``Step.graph(**...)``) per picture: the lecture theme, as `gradtrace graph`.
#: SVG only: GitHub and browsers show it, it zooms, its nodes have tooltips, and it is a
#: tenth of the size of graphviz's PNG (144 dpi, thousands of pixels wide).
GRAPH = {"graph": {"view": "both"}, "backward": {"view": "backward"}}

#: Animation options (``Trace.animate(kind, **...)``). Backprop frames are text: 72 dpi
#: (792x468) is what a GitHub page shows without scaling. Training: 30 frames at 5 per
#: second (a 6-second loop) at 60 dpi (720x405) instead of 180 at 12 per second at 72 dpi.
ANIMATE = {"backprop": {"dpi": 72},
           "training": {"frames": 30, "fps": 5, "dpi": 60}}


def filename(name: str, picture: str) -> str:
    """The file of one picture of demo ``name``, in the gallery folder."""
    return f"{name}-{picture}.{'svg' if picture in GRAPH else 'gif'}"


def record(name: str, trace_path: Path) -> list[str]:
    """`gradtrace run demos/NAME.py` in a fresh process; its one-line check verdict."""
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, "-m", "gradtrace", "run", "--no-report", "--no-animate",
           "-o", str(trace_path), str(ROOT / "demos" / f"{name}.py")]
    proc = subprocess.run(cmd, cwd=trace_path.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise SystemExit(f"gallery: recording {name} failed (exit code {proc.returncode}):\n{tail}")
    return [line.removeprefix("gradtrace: ") for line in proc.stderr.splitlines()
            if line.startswith("gradtrace: check:")]


def draw(name: str, trace, picture: str, out: Path) -> Path:
    """Write one picture of one demo; its path."""
    path = out / filename(name, picture)
    if picture in GRAPH:
        return trace.steps[0].graph(**GRAPH[picture]).save(path)
    return trace.animate(kind=picture, **ANIMATE[picture]).save(path)


def _kb(path: Path) -> str:
    return f"{path.stat().st_size / 1024:,.0f} KB"


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="demos: " + ", ".join(DEMOS))
    p.add_argument("demos", nargs="*", metavar="DEMO",
                   help="demos to redo (default: all); also --only")
    p.add_argument("--only", default="", metavar="A,B", help="demos to redo, comma-separated")
    p.add_argument("--what", default=",".join(PICTURES), metavar="P,Q",
                   help=f"pictures to redo, comma-separated, of {', '.join(PICTURES)} (default: all)")
    p.add_argument("--out", type=Path, default=OUT, help="the gallery folder (default: docs/gallery)")
    p.add_argument("--traces", type=Path, default=None, metavar="DIR",
                   help="keep the recorded traces in DIR/NAME/trace.gtrace and reuse those that "
                        "exist (default: record afresh into a temporary folder)")
    p.add_argument("--list", action="store_true", help="print the demos and their files, and exit")
    args = p.parse_args(argv)
    args.out = args.out.resolve()  # the recordings run in other folders
    args.traces = args.traces.resolve() if args.traces is not None else None
    names = list(args.demos) + [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        p.error(f"unknown demo {unknown[0]!r}; the demos are {', '.join(DEMOS)}")
    args.names = [n for n in DEMOS if n in names] if names else list(DEMOS)
    args.pictures = [w.strip() for w in args.what.split(",") if w.strip()]
    bad = [w for w in args.pictures if w not in PICTURES]
    if bad or not args.pictures:
        p.error(f"--what takes {', '.join(PICTURES)}, not {args.what!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in DEMOS:
            print(f"{name}: " + " ".join(filename(name, p) for p in PICTURES))
        return 0
    sys.path.insert(0, str(ROOT))  # this checkout's gradtrace, as in the recordings
    import gradtrace

    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="gradtrace-gallery-") as tmp:
        traces = args.traces or Path(tmp)
        for name in args.names:
            started = time.perf_counter()
            path = traces / name / "trace.gtrace"
            if args.traces is not None and path.exists():
                print(f"{name}: reusing {path}", flush=True)
            else:
                print(f"{name}: recording demos/{name}.py", flush=True)
                for line in record(name, path):
                    print(f"  {line}")
            trace = gradtrace.load(path)
            try:
                for picture in args.pictures:
                    f = draw(name, trace, picture, args.out)
                    print(f"  wrote {_shown(f)} ({_kb(f)})", flush=True)
                    written.append(f)
            finally:
                trace.close()
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    total = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"{len(written)} files written; {_shown(args.out)} holds {total / 2**20:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
