"""A matplotlib backend for `gradtrace run`: plt.show() saves the figures instead of blocking."""

from __future__ import annotations

import contextlib
from pathlib import Path

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from ..tracefile.outputs import Outputs

#: The outputs of the trace being recorded (figure-N.png names); set by the script runner.
OUTPUTS: Outputs | None = None
#: Paths written so far, in order.
SAVED: list[Path] = []
#: One line per figure that could not be written (a full disk): the script goes on.
FAILED: list[str] = []

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def save_open_figures() -> list[Path]:
    out: list[Path] = []
    if OUTPUTS is None:
        return out
    for manager in Gcf.get_all_fig_managers():
        path = OUTPUTS.figure(len(SAVED) + len(FAILED) + 1)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            manager.canvas.figure.savefig(path, dpi=100)
        except OSError as e:
            # plt.show() must not fail the user's script because of where gradtrace saves
            FAILED.append(f"{path}: {e.strerror or e}")
            with contextlib.suppress(OSError):
                path.unlink()  # no half-written picture
            continue
        SAVED.append(path)
        out.append(path)
    return out


def show(*args, **kwargs):
    """Save every open figure next to the trace and close them, as closing windows would."""
    save_open_figures()
    Gcf.destroy_all()
