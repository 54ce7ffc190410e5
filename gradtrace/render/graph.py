"""Computation-graph pictures: DOT text, then SVG/PNG/PDF through graphviz or matplotlib.

The DOT text is written by hand, in node-id order, so the same trace gives the same
bytes every time. Layout, in order of preference: the ``dot`` program when it is on PATH,
the graphviz libraries bundled in pygraphviz's wheel, else a layered drawing with
matplotlib (the same layers, :func:`gradtrace.analysis.graph.layers`) plus a one-line hint.

This module holds the picture (:class:`GraphPicture`, :func:`graph_of_step`), the engine
choice and the file output; the rest lives beside it, and every public name is importable
from here too:

- ``graph_options``: :class:`GraphOptions`, the themes, the legend's words;
- ``graph_labels``: what a node says (:func:`node_label`, :func:`value_rows`);
- ``graph_layout``: the rank direction and fold on a 16:9 slide (:func:`layout`);
- ``graph_dot``: the DOT text (:func:`to_dot`);
- ``graph_draw``: the matplotlib fallback (:func:`draw_layered`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..analysis.graph import VIEWS, GraphModel, build_graph
from ..errors import RenderError, UsageError
from ..formatting import number as fmt_number
from ..formatting import shape as fmt_shape
from .graph_dot import to_dot
from .graph_draw import draw_layered
from .graph_labels import Cell, Label, node_label, value_rows
from .graph_layout import FOLD_GAIN, LEGEND_NODE, Layout, direction, layout
from .graph_options import _PNG_DPI, ENGINES, LEGEND, THEME, THEMES, GraphOptions, Theme

__all__ = ["GraphOptions", "GraphPicture", "graph_of_step", "to_dot", "node_label", "Theme", "THEME",
           "FORMATS", "available_engine", "HINT", "VIEWS", "THEMES", "ENGINES"]
# names that moved to the modules beside this one, still importable from here
__all__ += ["Cell", "Label", "value_rows", "Layout", "layout", "direction", "FOLD_GAIN", "LEGEND_NODE",
            "LEGEND", "draw_layered", "render_bytes", "fmt_number", "fmt_shape"]

#: Output formats by file extension.
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
#: The one line shown when neither graphviz route is available.
HINT = ("drawn with matplotlib (no graphviz found); for the real graphviz layout run "
        "`pip install pygraphviz` (its Linux wheel bundles graphviz) or install graphviz's `dot`")


# -- engines -----------------------------------------------------------------------------------
def _has_pygraphviz() -> bool:
    try:
        import pygraphviz  # noqa: F401
    except Exception:  # ImportError, or a wheel whose libraries fail to load
        return False
    return True


def available_engine(requested: str = "auto") -> str:
    """The layout engine to use: ``dot``, ``pygraphviz`` or ``matplotlib``."""
    if requested == "dot":
        if shutil.which("dot") is None:
            raise RenderError("the `dot` program is not on PATH; install graphviz or use "
                              "--engine auto")
        return "dot"
    if requested == "pygraphviz":
        if not _has_pygraphviz():
            raise RenderError("pygraphviz is not importable; `pip install pygraphviz` or use "
                              "--engine auto")
        return "pygraphviz"
    if requested == "matplotlib":
        return "matplotlib"
    if shutil.which("dot") is not None:
        return "dot"
    if _has_pygraphviz():
        return "pygraphviz"
    return "matplotlib"


def _dot_program(dot: str, fmt: str, dpi: int = _PNG_DPI) -> bytes:
    args = ["dot", f"-T{fmt}"] + ([f"-Gdpi={dpi}"] if fmt == "png" else [])
    try:
        r = subprocess.run(args, input=dot.encode("utf-8"), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RenderError(f"running `dot` failed: {e}") from None
    if r.returncode != 0:
        raise RenderError(f"`dot -T{fmt}` failed: {r.stderr.decode(errors='replace').strip()[:300]}")
    return r.stdout


_QUIETED = False


def _pygraphviz(dot: str, fmt: str, dpi: int = _PNG_DPI) -> bytes:
    import warnings

    import pygraphviz

    global _QUIETED
    args = f"-Gdpi={dpi}" if fmt == "png" else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = pygraphviz.AGraph(string=dot)
            if _QUIETED:
                return g.draw(format=fmt, prog="dot", args=args)
            # fontconfig prints a warning about the host's config straight to fd 2 the first
            # time the bundled libraries start; it is noise for a lecturer, so hide that once.
            _QUIETED = True
            with _quiet_fd2():
                return g.draw(format=fmt, prog="dot", args=args)
    except Exception as e:  # pygraphviz raises several types for bad input and IO errors
        raise RenderError(f"graphviz (pygraphviz) could not draw the graph: {e}") from None


class _quiet_fd2:
    """Silence the C-level stderr for a moment (falls back to doing nothing)."""

    def __enter__(self):
        self.saved = None
        with contextlib.suppress(Exception):  # a script under `gradtrace run` may have closed it
            sys.stderr.flush()
        try:
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            self.saved = None
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def render_bytes(model: GraphModel, options: GraphOptions, fmt: str, engine: str,
                 dpi: int = _PNG_DPI) -> bytes:
    """The picture in ``fmt`` (svg, png, pdf or dot) drawn by ``engine``; a PNG at ``dpi``
    pixels per inch (72: one pixel per point of the layout)."""
    if fmt == "dot":
        return to_dot(model, options).encode("utf-8")
    if engine == "dot":
        return _dot_program(to_dot(model, options), fmt, dpi)
    if engine == "pygraphviz":
        return _pygraphviz(to_dot(model, options), fmt, dpi)
    if options.engine == "auto":
        _hint_once()
    return draw_layered(model, options, fmt, dpi)


_HINTED = False


def _hint_once() -> None:
    global _HINTED
    if not _HINTED:
        _HINTED = True
        print(f"gradtrace: hint: {HINT}", file=sys.stderr)


# -- the picture object ------------------------------------------------------------------------
class GraphPicture:
    """A step's computation graph: ``.save(path)``, ``.dot``, ``.svg()``, and inline display
    in Jupyter (``_repr_svg_`` / ``_repr_mimebundle_``, which never raise)."""

    def __init__(self, model: GraphModel, options: GraphOptions):
        self.model = model
        self.options = options
        self._cache: dict[str, bytes] = {}
        self._engine: str | None = None

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = available_engine(self.options.engine)
        return self._engine

    @property
    def hint(self) -> str | None:
        """A one-line hint when the picture is drawn without graphviz."""
        return HINT if self.engine == "matplotlib" and self.options.engine == "auto" else None

    @property
    def dot(self) -> str:
        """The DOT text (the same bytes for the same trace and options)."""
        return self.render("dot").decode("utf-8")

    def render(self, fmt: str = "svg") -> bytes:
        if fmt not in ("svg", "png", "pdf", "dot"):
            raise UsageError(f"unknown graph format {fmt!r}; use svg, png, pdf or dot")
        if fmt not in self._cache:
            self._cache[fmt] = render_bytes(self.model, self.options, fmt, self.engine)
        return self._cache[fmt]

    def svg(self) -> str:
        return self.render("svg").decode("utf-8")

    def save(self, path, format: str | None = None) -> Path:
        """Write the picture; the format comes from the extension (.svg .png .pdf .dot .gv)."""
        path = Path(path)
        fmt = format or FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise UsageError(f"{path}: unknown picture type {path.suffix or '(no extension)'!r}; "
                             "use .svg, .png, .pdf or .dot")
        data = self.render(fmt)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as e:
            _remove_partial(path)
            raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
        return path

    def _repr_svg_(self):
        try:
            return self.svg()
        except Exception:  # Jupyter must never see an exception from a repr
            return None

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter: the SVG, shrunk to the cell's width, and a PNG for where SVG is not shown
        (an untrusted notebook, GitHub)."""
        from .notebook import fitted_svg

        try:
            bundle: dict = {"image/svg+xml": fitted_svg(self.svg()), "text/plain": repr(self)}
        except Exception as e:  # noqa: BLE001 - shown to the user instead of raising
            return {"text/plain": f"{self!r} (could not be drawn: {type(e).__name__}: {e})"}
        try:
            bundle["image/png"] = self.render("png")
        except Exception:  # noqa: BLE001 - the SVG alone is still a picture
            pass
        return bundle

    def __repr__(self) -> str:
        g = self.model.graph
        return (f"<gradtrace graph: step {self.model.step}, view {self.model.view}, "
                f"{g.number_of_nodes()} nodes, {g.number_of_edges()} edges>")


def graph_of_step(step, view: str = "both", options: GraphOptions | None = None, **changes) -> GraphPicture:
    """``Step.graph()``: the computation graph of ``step``, ready to save or show."""
    options = GraphOptions.make(options, view=view, **changes)
    return GraphPicture(build_graph(step, options.view, budget=options.budget, expand=options.expand), options)


def _remove_partial(path: Path) -> None:
    """A picture whose writing failed half-way (a full disk) is not left behind."""
    try:
        if path.is_file():
            path.unlink()
    except OSError:
        pass
