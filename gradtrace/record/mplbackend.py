"""A matplotlib backend for `gradtrace run`: plt.show() saves the figures instead of blocking."""

from __future__ import annotations

from pathlib import Path

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

#: Where show() writes figures; set by the script runner.
FIGURE_DIR: Path | None = None
#: Paths written so far, in order.
SAVED: list[Path] = []

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def save_open_figures() -> list[Path]:
    out = []
    if FIGURE_DIR is None:
        return out
    for manager in Gcf.get_all_fig_managers():
        FIGURE_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURE_DIR / f"figure-{len(SAVED) + 1}.png"
        manager.canvas.figure.savefig(path, dpi=100)
        SAVED.append(path)
        out.append(path)
    return out


def show(*args, **kwargs):
    """Save every open figure next to the trace and close them, as closing windows would."""
    save_open_figures()
    Gcf.destroy_all()
