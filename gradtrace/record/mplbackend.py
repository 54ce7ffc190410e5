"""A matplotlib backend for `gradtrace run`: plt.show() saves the figures instead of blocking."""

from __future__ import annotations

from matplotlib._pylab_helpers import Gcf
from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .figures import save_open_figures

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase

__all__ = ["FigureCanvas", "FigureManager", "show", "save_open_figures"]


def show(*args, **kwargs):
    """Save every open figure next to the trace and close them, as closing windows would."""
    save_open_figures()
    Gcf.destroy_all()
