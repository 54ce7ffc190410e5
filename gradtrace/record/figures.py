"""The figures a script shows under `gradtrace run`: where they go and what was saved.

Imports nothing of matplotlib: a script that never imports it does not pay for it. The
backend itself (:mod:`gradtrace.record.mplbackend`) is named in ``MPLBACKEND`` while the
script runs, so matplotlib loads it only when the script asks for pyplot.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from ..tracefile.outputs import Outputs

#: The name of the backend as ``MPLBACKEND`` and ``rcParams["backend"]`` take it.
BACKEND = "module://gradtrace.record.mplbackend"

#: The outputs of the trace being recorded (figure-N.png names); set by the script runner.
OUTPUTS: Outputs | None = None
#: Paths written so far, in order.
SAVED: list[Path] = []
#: One line per figure that could not be written (a full disk): the script goes on.
FAILED: list[str] = []


def start(outputs: Outputs) -> None:
    """A run begins: its figures go next to ``outputs``' trace."""
    global OUTPUTS
    OUTPUTS = outputs
    SAVED.clear()
    FAILED.clear()


def save_open_figures() -> list[Path]:
    """Save every figure pyplot has open next to the trace; the paths written. Nothing (and
    no import) when the script never used pyplot."""
    out: list[Path] = []
    if OUTPUTS is None or "matplotlib._pylab_helpers" not in sys.modules:
        return out
    from matplotlib._pylab_helpers import Gcf

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
