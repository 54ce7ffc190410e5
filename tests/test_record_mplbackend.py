"""gradtrace/record/mplbackend.py: the matplotlib backend under which plt.show() saves the figures next to the trace."""

from __future__ import annotations

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt  # Agg: conftest sets MPLBACKEND
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from gradtrace.record import figures, mplbackend
from gradtrace.tracefile.outputs import Outputs


@pytest.fixture
def recording(tmp_path, monkeypatch):
    """A run whose trace is tmp_path/run.gtrace, as the script runner starts it; no figure
    open before or after."""
    plt.close("all")
    monkeypatch.setattr(figures, "SAVED", [])
    monkeypatch.setattr(figures, "FAILED", [])
    monkeypatch.setattr(figures, "OUTPUTS", None)
    outputs = Outputs(tmp_path / "run.gtrace")
    figures.start(outputs)
    yield outputs
    plt.close("all")


def _figure(w=2.0, h=1.0):
    fig = plt.figure(figsize=(w, h))
    fig.gca().plot([0, 1], [1, 0])
    return fig


def test_it_is_a_backend_matplotlib_can_load():
    assert figures.BACKEND == f"module://{mplbackend.__name__}"
    assert mplbackend.FigureCanvas is FigureCanvasAgg
    assert callable(mplbackend.show) and set(mplbackend.__all__) == {
        "FigureCanvas", "FigureManager", "show", "save_open_figures"}


def test_show_saves_every_open_figure_in_order_and_closes_them(recording):
    _figure(2, 1)
    _figure(1, 3)
    mplbackend.show()
    assert plt.get_fignums() == []                 # closed, as closing the windows would
    paths = [recording.figure(1), recording.figure(2)]
    assert figures.SAVED == paths and figures.FAILED == []
    assert paths[0].name == "run.figure-1.png" and paths[0].parent == recording.folder
    # saved at 100 dpi: figsize (2, 1) is 200 x 100 pixels
    assert matplotlib.image.imread(paths[0]).shape[:2] == (100, 200)
    assert matplotlib.image.imread(paths[1]).shape[:2] == (300, 100)


def test_a_later_show_numbers_on_from_the_figures_saved(recording):
    _figure()
    mplbackend.show()
    _figure()
    mplbackend.show(block=True)                    # plt.show's arguments are taken, not needed
    assert [p.name for p in figures.SAVED] == ["run.figure-1.png", "run.figure-2.png"]
    assert all(p.exists() for p in figures.SAVED)


def test_show_with_no_figure_saves_nothing(recording):
    mplbackend.show()
    assert figures.SAVED == [] and list(recording.folder.iterdir()) == []


def test_show_outside_a_recording_only_closes(recording, monkeypatch):
    monkeypatch.setattr(figures, "OUTPUTS", None)
    _figure()
    mplbackend.show()
    assert plt.get_fignums() == [] and figures.SAVED == []
    assert list(recording.folder.iterdir()) == []


def test_a_figure_that_cannot_be_written_is_one_line_and_still_closed(recording, tmp_path):
    blocked = Outputs(tmp_path / "not-a-folder" / "run.gtrace")
    (tmp_path / "not-a-folder").write_text("a file where the folder would be")
    figures.start(blocked)
    _figure()
    mplbackend.show()
    assert plt.get_fignums() == [] and figures.SAVED == []
    (line,) = figures.FAILED
    assert line.startswith(f"{blocked.figure(1)}: ") and "\n" not in line


def test_plt_show_under_the_backend_is_its_show(recording):
    before = matplotlib.get_backend()
    plt.switch_backend(figures.BACKEND)
    try:
        _figure()
        plt.show()
    finally:
        plt.switch_backend(before)
    assert figures.SAVED == [recording.figure(1)] and recording.figure(1).exists()
    assert plt.get_fignums() == []
