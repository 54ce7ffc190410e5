"""Animations of a trace: the options, the frame budget, and one object that saves GIF/MP4/HTML.

Two kinds, each a *renderer* that owns a matplotlib figure and redraws it for frame ``i``:

- ``backprop`` (:mod:`gradtrace.render.backprop`): one step, op by op and node by node;
- ``training`` (:mod:`gradtrace.render.training`): the run, one frame per step (or a subsample).

:class:`Animation` drives a renderer through a matplotlib movie writer frame by frame
(so a progress bar can follow), and works from the trace model alone: a trace saved
yesterday animates today without re-running the script. Output is deterministic: the same
trace and options give the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..analysis.sampling import subsample  # noqa: F401 (re-exported: part of this module's API)
from ..errors import FrameIndexError, RenderError, UsageError

__all__ = [
    "KINDS", "FORMATS", "AnimateOptions", "Animation", "animation_of_trace", "subsample",
    "mp4_available",
]

KINDS = ("backprop", "training")
FORMATS = {".gif": "gif", ".mp4": "mp4", ".html": "html", ".htm": "html"}

#: Per-kind defaults: a backprop frame is read like a slide (1 per second); a training
#: frame is one step of a movie. The training budget keeps a 3,000-step run to ~20 s of GIF.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "backprop": dict(fps=1.0, frames=80, dpi=80, size=(24.0, 13.5)),   # 1920x1080, a slide
    "training": dict(fps=12.0, frames=180, dpi=72, size=(12.0, 6.75)),
}


#: ``progress(done, total)``: how saving reports its frames; render never draws a bar itself.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class AnimateOptions:
    """Every option of an animation; the CLI and ``Trace.animate(**options)`` both build one.

    - ``kind``: ``"backprop"`` (one step explained) or ``"training"`` (the run over time).
    - ``step``: backprop only: the step to explain, by run step number, or ``"first"`` /
      ``"last"``; ``None`` picks the second step with a backward pass (the first in which
      ``.grad`` can already hold something, so the accumulation frame shows what the script
      really does), or the first when there is only one.
    - ``fps``: frames per second of the GIF/MP4/HTML player.
    - ``frames``: the frame budget. A training run with more steps is subsampled evenly
      (first and last step kept); a backprop plan with more frames shows several ops per
      frame. Either way :attr:`Animation.note` says so.
    - ``dpi`` and ``size`` (width, height in inches): pixels = size x dpi.
    - ``progress``: a callback ``progress(done, total)``, called as each frame is rendered
      while saving (the CLI passes a click progress bar); ``True`` writes a plain counter on
      stderr, ``False`` or ``None`` nothing.
    - ``checks``: backprop only: the trace's check report (``trace.check()``), computed once
      by the caller. A step whose gradient check failed is then the default step, and the
      frames that show the parameter or the custom Function the check concerns say
      "check failed: ..." with that box marked, instead of narrating the backward as right.
    """

    kind: str = "training"
    step: int | str | None = None
    fps: float | None = None
    frames: int | None = None
    dpi: int | None = None
    size: tuple[float, float] | None = None
    progress: bool | Progress | None = False
    checks: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UsageError(f"unknown animation kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.fps is not None and not (0 < self.fps <= 100):
            raise UsageError(f"fps must be above 0 and at most 100, not {self.fps}")
        if self.frames is not None and self.frames < 2:
            raise UsageError(f"the frame budget must be 2 or more, not {self.frames}")
        if self.dpi is not None and not (20 <= self.dpi <= 600):
            raise UsageError(f"dpi must be between 20 and 600, not {self.dpi}")
        if self.size is not None:
            size = parse_size(self.size)
            object.__setattr__(self, "size", size)

    def resolved(self) -> "AnimateOptions":
        """A copy with every ``None`` replaced by the kind's default."""
        d = _DEFAULTS[self.kind]
        return dataclasses.replace(
            self, fps=self.fps if self.fps is not None else d["fps"],
            frames=self.frames if self.frames is not None else d["frames"],
            dpi=self.dpi if self.dpi is not None else d["dpi"],
            size=self.size if self.size is not None else d["size"])

    @classmethod
    def build(cls, kind: str = "training", **options: Any) -> "AnimateOptions":
        names = {f.name for f in dataclasses.fields(cls)} - {"kind"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UsageError(f"unknown animation option(s) {', '.join(unknown)}; "
                             f"the options are {', '.join(sorted(names))}")
        return cls(kind=kind, **options)


def parse_size(size) -> tuple[float, float]:
    """``"10x6"``, ``(10, 6)`` -> (10.0, 6.0) inches."""
    if isinstance(size, str):
        parts = re.split(r"[x×,]", size.strip().lower())
    else:
        parts = list(size)
    try:
        w, h = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise UsageError(f"size takes WIDTHxHEIGHT in inches (e.g. 10x6), not {size!r}") from None
    if not (2 <= w <= 40 and 2 <= h <= 40):
        raise UsageError(f"size {w:g}x{h:g} is out of range: each side 2 to 40 inches")
    return (w, h)


def mp4_available() -> bool:
    """Whether matplotlib finds an ffmpeg writer for MP4 output."""
    from matplotlib import animation

    return animation.writers.is_available("ffmpeg")


class Renderer(Protocol):
    """What :class:`Animation` needs from a kind: a figure, and a way to show frame ``i``.

    A renderer may also have ``animated()``: the artists that change between frames (asked
    again after each ``draw``). Everything else is then drawn once, and each frame draws
    only those over a copy of it (blitting)."""

    title: str
    note: str | None

    def __len__(self) -> int: ...

    def caption(self, i: int) -> str: ...

    def setup(self, fig) -> None: ...

    def draw(self, i: int) -> None: ...


class Animation:
    """An animation of a trace: ``save("x.gif" | "x.mp4" | "x.html")``, ``to_html()``,
    ``frame(i)`` as an image, and inline display in Jupyter.

    ``note`` says when the frames are a subsample of the steps (or ops were grouped).
    """

    def __init__(self, renderer: Renderer, options: AnimateOptions):
        self._renderer = renderer
        self.options = options.resolved()
        self.kind = self.options.kind

    def _fps(self) -> float:
        assert self.options.fps is not None  # resolved() filled it in
        return float(self.options.fps)

    def _dpi(self) -> float:
        assert self.options.dpi is not None  # resolved() filled it in
        return float(self.options.dpi)

    def __len__(self) -> int:
        return len(self._renderer)

    @property
    def n_frames(self) -> int:
        return len(self._renderer)

    @property
    def note(self) -> str | None:
        return self._renderer.note

    @property
    def title(self) -> str:
        return self._renderer.title

    @property
    def captions(self) -> list[str]:
        return [self._renderer.caption(i) for i in range(len(self))]

    @property
    def renderer(self) -> Renderer:
        return self._renderer

    def __repr__(self) -> str:
        return f"<gradtrace.Animation {self.kind}: {len(self)} frames, {self.title!r}>"

    # -- drawing ---------------------------------------------------------------------------
    def _figure(self, dpi: float):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from .text import fit_texts, user_text

        fig = Figure(figsize=self.options.size, dpi=dpi)
        FigureCanvasAgg(fig)
        with user_text():
            self._renderer.setup(fig)
        fit_texts([fig])  # user text: a font that has its glyphs, never mathtext
        return fig

    def images(self, dpi: float | None = None, frames=None):
        """Yield the frames as PIL RGB images (all, or the indices in ``frames``).

        What never changes is drawn once; a renderer that names its moving artists
        (``animated()``) has only those redrawn each frame, and of those only the ones that
        changed since the last frame (new, removed, or changed in place) and whatever they
        overlap: see :class:`_Redraw`.
        """
        from PIL import Image

        from .text import fit_texts, quiet_fonts, user_text

        with quiet_fonts():
            fig = self._figure((float(dpi) if dpi else self._dpi()))
        animated = getattr(self._renderer, "animated", None)  # optional: not in Renderer
        canvas = fig.canvas
        redraw = None
        if animated is not None:
            for a in animated():
                a.set_animated(True)
            with quiet_fonts():
                canvas.draw()
            redraw = _Redraw(fig)
        size = canvas.get_width_height()
        for i in (range(len(self)) if frames is None else frames):
            with user_text():
                self._renderer.draw(i)
                if redraw is not None and animated is not None:  # both or neither
                    moving = animated()
                    fit_texts(moving)
                    redraw.frame(moving)
                else:
                    fit_texts([fig])
                    canvas.draw()
            rgba = Image.frombuffer("RGBA", size, bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)
            yield rgba.convert("RGB")

    def frame(self, i: int, dpi: float | None = None):
        """Frame ``i`` as a PIL RGB image."""
        if not -len(self) <= i < len(self):
            raise FrameIndexError(f"no frame {i}: the animation has frames 0..{len(self) - 1}"
                                  f" (or -{len(self)}..-1 from the end)")
        return next(self.images(dpi, [i % len(self)]))

    def save_frame(self, i: int, path, dpi: float | None = None) -> Path:
        """Frame ``i`` as a PNG file (to look at one frame closely)."""
        path = Path(path)
        self.frame(i, dpi).save(path, format="PNG")
        return path

    # -- saving ------------------------------------------------------------------------------
    def save(self, path, *, fps: float | None = None, dpi: float | None = None,
             progress: bool | Progress | None = None) -> Path:
        """Write the animation; the format follows the suffix: .gif, .mp4 or .html.

        MP4 needs an ffmpeg writer; without one this raises :class:`RenderError` and writes
        nothing (GIF and HTML need nothing beyond matplotlib and Pillow).
        """
        return self.save_all([path], fps=fps, dpi=dpi, progress=progress)[0]

    def save_all(self, paths, *, fps: float | None = None, dpi: float | None = None,
                 progress: bool | Progress | None = None) -> list[Path]:
        """Write several files (``x.gif``, ``x.html``...) from one rendering of the frames;
        ``progress`` (default: the options') as in :class:`AnimateOptions`."""
        paths = [Path(p) for p in paths]
        for path in paths:
            fmt = FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise UsageError(f"{path}: cannot tell the format from the suffix; use .gif, .mp4 "
                                 "or .html")
            if not path.parent.exists():
                raise UsageError(f"{path}: the folder {path.parent} does not exist")
            if fmt == "mp4" and not mp4_available():
                raise RenderError(f"{path}: MP4 needs ffmpeg, which matplotlib cannot find; "
                                  "install ffmpeg, or save as .gif or .html")
        fps = (float(fps) if fps else self._fps())
        dpi = (float(dpi) if dpi else self._dpi())
        progress = self.options.progress if progress is None else progress
        jobs = []
        for path in paths:
            fmt = FORMATS[path.suffix.lower()]
            writer = {"gif": _gif_writer, "mp4": _mp4_writer, "html": _html_writer}[fmt](fps)
            # written beside the target and renamed at the end: no half-written file is left
            jobs.append((writer, path, path.with_name(f".{path.stem}.part{path.suffix}")))
        try:
            self._run(jobs, dpi, progress, ", ".join(p.name for p in paths))
            for writer, path, tmp in jobs:
                if FORMATS[path.suffix.lower()] == "html":
                    self._finish_html(tmp)
                tmp.replace(path)
        except OSError as e:  # a full disk, an unwritable folder
            where = ", ".join(str(p) for p in paths)
            raise RenderError(f"cannot write {where}: {e.strerror or e}") from None
        finally:
            for _, _, tmp in jobs:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        return paths

    def to_html(self, *, fps: float | None = None, dpi: float | None = None) -> str:
        """A self-contained HTML fragment: frames embedded, no external resources."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / "anim.html"
            writer = _html_writer((float(fps) if fps else self._fps()))
            self._run([(writer, None, tmp)], (float(dpi) if dpi else self._dpi()), False, "html")
            return _self_contained(tmp.read_text(encoding="utf-8"))

    def _repr_html_(self) -> str:
        return self.to_html()

    def _run(self, jobs, dpi: float, progress: bool | Progress | None, label: str) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        # the writers want a figure for the frame size; the frames themselves come from images()
        sizer = Figure(figsize=self.options.size, dpi=dpi)
        FigureCanvasAgg(sizer)
        started = []
        try:
            for writer, _, tmp in jobs:
                writer.setup(sizer, str(tmp), dpi=dpi)
                started.append(writer)
            report = _progress(progress, label)
            total = len(self)
            for done, im in enumerate(self.images(dpi), 1):
                for writer in started:
                    writer.grab_image(im)
                report(done, total)
        except BaseException:
            for writer in started:
                _abandon(writer)
            raise
        for writer in started:
            writer.finish()

    def _finish_html(self, tmp: Path) -> None:
        """matplotlib's player fragment -> a page of its own, with nothing fetched from outside."""
        from .palette import css_variables

        fragment = _self_contained(tmp.read_text(encoding="utf-8"))
        title = html.escape(self.title)
        note = f"<p class='gt-note'>{html.escape(self.note)}</p>\n" if self.note else ""
        tmp.write_text("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
                       f"<title>{title}</title>\n<style>{css_variables()}body{{font-family:sans-serif;"
                       "margin:1em}.gt-note{color:var(--gt-muted)}</style>\n</head>\n<body>\n"
                       f"<h3>{title}</h3>\n{note}{fragment}\n</body>\n</html>\n", encoding="utf-8")


class _Redraw:
    """Draws a frame's moving artists over the background drawn once, redrawing only what
    changed since the frame before.

    An artist changed when it is new, was removed, or was changed in place (matplotlib marks
    it ``stale``). The picture is restored to the background where a changed artist is or
    was, every artist that overlaps such a place is drawn again whole (its own place joins
    them, until nothing more overlaps), and the rest of the picture stays as it was: the
    same pixels as drawing every artist again, in the same order (a test compares the two).
    An artist whose extent cannot be told (not a text, patch or line) redraws everything.
    """

    #: pixels added around an artist's extent: antialiasing and line joins reach past it
    PAD = 3

    def __init__(self, fig) -> None:
        self.fig = fig
        self.canvas = fig.canvas
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.order = {id(ax): j for j, ax in enumerate(fig.axes)}
        self.width, self.height = self.canvas.get_width_height()
        self.last: dict[int, tuple[Any, tuple[int, int, int, int] | None]] = {}
        self.full = False  # for tests: draw every artist every frame

    def frame(self, moving: list) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.text import Text

        renderer = self.canvas.get_renderer()
        for a in moving:
            a.set_animated(True)
        if self.full or not all(isinstance(a, (Text, Patch, Line2D)) for a in moving):
            places: dict[int, Any] = {}   # extents not told: everything is drawn again
        else:
            # an artist kept from the frame before and not changed is where it was
            places = {id(a): (self.last[id(a)][1] if id(a) in self.last and not a.stale
                              else self._place(a, renderer)) for a in moving}
        known = bool(places) and all(p is not None for p in places.values()) and all(
            p is not None for _, p in self.last.values())
        if not self.last or not known:
            self.canvas.restore_region(self.background)
            todo = list(moving)
        else:
            dirty = [p for k, (_, p) in self.last.items() if k not in places]
            for a in moving:
                if id(a) not in self.last or a.stale:
                    dirty.append(places[id(a)])
                    if id(a) in self.last:
                        dirty.append(self.last[id(a)][1])
            rects = _merged(dirty)
            for x0, y0, x1, y1 in rects:
                # bbox: pixels from the top left; xy: where the saved region starts
                self.canvas.restore_region(self.background, bbox=(x0, y0, x1, y1), xy=(0, 0))
            # every artist that reaches into a restored place is drawn again there, clipped
            # to it: each pixel of it is drawn once, in the same order as a full redraw
            for a in _in_order(moving, self.order):
                for r in rects:
                    if _meets(places[id(a)], r):
                        self._draw_clipped(a, r)
            self.last = {id(a): (a, places[id(a)]) for a in moving}
            return
        for a in _in_order(todo, self.order):
            self.fig.draw_artist(a)
        self.last = {id(a): (a, places.get(id(a))) for a in moving}

    def _draw_clipped(self, a, rect) -> None:
        """Draw ``a`` only inside ``rect`` (pixels from the top left), its clipping as it was
        afterwards (and not marked as changed for that)."""
        from matplotlib.transforms import Bbox

        x0, y0, x1, y1 = rect
        h = self.height
        clip = Bbox.from_extents(x0, h - y1 - 1, x1 + 1, h - y0)
        box, on = a.get_clip_box(), a.get_clip_on()
        if box is not None:
            both = Bbox.intersection(clip, box)
            if both is None:
                return
            clip = both
        a.set_clip_box(clip)
        a.set_clip_on(True)
        try:
            self.fig.draw_artist(a)
        finally:
            a.set_clip_box(box)
            a.set_clip_on(on)
            a.stale = False

    def _place(self, a, renderer) -> tuple[int, int, int, int] | None:
        """Where ``a`` draws, in pixels from the top left (x0, y0, x1, y1), padded and
        within the picture; ``None`` when that cannot be told."""
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        from matplotlib.text import Text
        from matplotlib.transforms import Bbox

        if not a.get_visible():
            return (0, 0, 0, 0)
        pad = self.PAD
        if isinstance(a, Text):
            if not a.get_text():
                return (0, 0, 0, 0)
            box = a.get_window_extent(renderer)
            patch = a.get_bbox_patch()
            if patch is not None:
                a.update_bbox_position_size(renderer)
                box = Bbox.union([box, patch.get_window_extent(renderer)])
                pad += patch.get_linewidth() * self.fig.dpi / 72
        elif isinstance(a, (Patch, Line2D)):
            box = a.get_window_extent(renderer)
            pad += a.get_linewidth() * self.fig.dpi / 72
            if isinstance(a, Line2D) and a.get_marker() not in (None, "None", "", " "):
                pad += a.get_markersize() * self.fig.dpi / 72
        else:
            return None
        x0, y0, x1, y1 = box.extents
        if not all(map(_finite, (x0, y0, x1, y1))):
            return None
        h = self.height
        return (max(0, int(x0 - pad)), max(0, int(h - y1 - pad)),
                min(self.width, int(x1 + pad) + 1), min(h, int(h - y0 + pad) + 1))


def _in_order(artists, order: dict[int, int]) -> list:
    """As matplotlib draws them: axes in order, artists by zorder (stable)."""
    return sorted(artists, key=lambda a: (order.get(id(a.axes), -1), a.get_zorder()))


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _meets(a, b) -> bool:
    """Whether two (x0, y0, x1, y1) pixel rectangles overlap."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _merged(rects: list) -> list:
    """The rectangles, with those that overlap merged into one (so no pixel is restored twice)."""
    out: list = []
    for r in rects:
        if r[2] <= r[0] or r[3] <= r[1]:
            continue
        r = list(r)
        merged = True
        while merged:
            merged = False
            for o in out:
                if _meets(r, o):
                    out.remove(o)
                    r = [min(r[0], o[0]), min(r[1], o[1]), max(r[2], o[2]), max(r[3], o[3])]
                    merged = True
                    break
        out.append(tuple(r))
    return out


def animation_of_trace(trace, kind: str = "training", **options: Any) -> Animation:
    """The animation of ``kind`` (``"backprop"`` or ``"training"``) for ``trace``; see
    :class:`AnimateOptions` for the options. Nothing is drawn until it is saved or shown."""
    opts = AnimateOptions.build(kind, **options).resolved()
    if opts.kind == "backprop":
        from .backprop import BackpropRenderer

        renderer: Renderer = BackpropRenderer(trace, opts)
    else:
        from .training import TrainingRenderer

        renderer = TrainingRenderer(trace, opts)
    return Animation(renderer, opts)


# -- writers --------------------------------------------------------------------------------
#
# matplotlib's writers, fed finished images (grab_image) instead of re-rendering the figure
# for every frame (grab_frame), which would throw away the drawn-once background.

def _gif_writer(fps: float):
    """matplotlib's PillowWriter, keeping each frame as a 256-colour image as it arrives
    (a quarter of the memory of RGBA) and letting Pillow store only what changed."""
    from matplotlib import animation
    from PIL import Image

    class GifWriter(animation.PillowWriter):
        def grab_image(self, im):
            self._frames.append(im.quantize(colors=255, method=Image.Quantize.FASTOCTREE,
                                            dither=Image.Dither.NONE))

        def finish(self):
            # GIF delays are in hundredths of a second
            duration = max(20, int(round(100 / self.fps)) * 10)
            # one palette for all frames; Pillow then stores each frame's changed rectangle
            # with the part of that palette it uses (smaller than one 256-colour table)
            frames = shared_palette(self._frames)
            frames[0].save(self.outfile, format="GIF", save_all=True,
                           append_images=frames[1:], duration=duration, loop=0)
            self._frames = []

    return GifWriter(fps=fps)  # type: ignore[arg-type]  # stubs say int; a float fps works


def shared_palette(frames: list) -> list:
    """The frames (256-colour images, each with its own palette) on one palette of at most
    256 colours: the colours of all frames, weighted by how many pixels have them (reduced
    by median cut when there are more), each frame's colours mapped to the nearest. With
    one palette the GIF has one colour table, and a pixel that did not change between two
    frames has the same index in both, so only the changed rectangle is stored."""
    import numpy as np
    from PIL import Image

    counts: dict[tuple[int, int, int], int] = {}
    for im in frames:
        pal = im.getpalette() or []
        for n, k in im.getcolors(256) or []:
            c = (pal[3 * k], pal[3 * k + 1], pal[3 * k + 2])
            counts[c] = counts.get(c, 0) + n
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    if len(ranked) <= 256:
        palette = np.array(ranked, dtype=np.int32)
    else:
        total = sum(counts.values())
        sample = [c for c in ranked for _ in range(max(1, round(counts[c] * 100_000 / total)))]
        img = Image.new("RGB", (len(sample), 1))
        img.putdata(sample)
        q = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        flat: list[int] = list(q.getpalette() or [])
        used = sorted({k for _, k in q.getcolors(256) or [] if isinstance(k, int)})
        palette = np.array([flat[3 * k:3 * k + 3] for k in used], dtype=np.int32)
    flat_palette = [int(v) for v in palette.reshape(-1)]
    out = []
    for im in frames:
        own = np.array(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
        nearest = ((own[:, None, :] - palette[None, :, :]) ** 2).sum(-1).argmin(1).astype(np.uint8)
        idx = nearest[np.asarray(im)]
        new = Image.fromarray(idx, mode="P")
        new.putpalette(flat_palette)
        out.append(new)
    return out


def _html_writer(fps: float):
    """matplotlib's HTMLWriter (the jshtml player) with every frame embedded as a PNG of 256
    colours."""
    import base64
    import io

    from matplotlib import animation

    from PIL import Image

    class HtmlWriter(animation.HTMLWriter):
        def grab_image(self, im):
            # 256 colours, as in the GIF: a third of the bytes of a full-colour PNG
            im = im.quantize(colors=255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=False)
            self._saved_frames.append(base64.encodebytes(buf.getvalue()).decode("ascii"))

    # embed_limit (MB) only matters to grab_frame, which is not used
    return HtmlWriter(fps=fps, embed_frames=True, default_mode="loop",  # type: ignore[arg-type]
                      embed_limit=1024)  # matplotlib's stubs say fps: int; a float fps works


def _mp4_writer(fps: float):
    from matplotlib import animation

    class Mp4Writer(animation.FFMpegWriter):
        def grab_image(self, im):
            if im.size != self.frame_size:
                raise RenderError(f"frame of {im.size} pixels for a {self.frame_size} movie")
            self._proc.stdin.write(im.convert("RGBA").tobytes())

    # yuv420p plays everywhere (browsers, QuickTime) and needs even sides: the scale filter
    return Mp4Writer(fps=fps, codec="h264",  # type: ignore[arg-type]  # stubs say int; float works
                     extra_args=["-pix_fmt", "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"])


def _abandon(writer) -> None:
    """Stop a writer after an error without leaving its subprocess or frames behind."""
    proc = getattr(writer, "_proc", None)
    if proc is not None:
        try:
            proc.kill()
            proc.wait()
        except OSError:
            pass
    if hasattr(writer, "_frames"):
        writer._frames = []


def _progress(progress: bool | Progress | None, label: str) -> Progress:
    """The callback for ``progress``: the caller's, a plain stderr counter for ``True``, or none."""
    if callable(progress):
        return progress
    if not progress:
        return lambda done, total: None

    def counter(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rgradtrace: rendering {label} {done}/{total}", end=end, file=sys.stderr, flush=True)

    return counter


# -- HTML -------------------------------------------------------------------------------------

# matplotlib's player draws its buttons with Font Awesome from a CDN; plain characters keep
# the file usable offline.
_ICONS = {
    "fa fa-fast-backward": "&#x23EE;", "fa fa-step-backward": "&#x2039;",
    "fa fa-play fa-flip-horizontal": "&#x25C0;", "fa fa-pause": "&#x23F8;",
    "fa fa-play": "&#x25B6;", "fa fa-step-forward": "&#x203A;",
    "fa fa-fast-forward": "&#x23ED;", "fa fa-minus": "&minus;", "fa fa-plus": "+",
}


def _self_contained(fragment: str) -> str:
    fragment = re.sub(r"<link[^>]*https?://[^>]*>", "", fragment)
    for cls, char in _ICONS.items():
        fragment = fragment.replace(f'<i class="{cls}"></i>', char)
    # matplotlib names the player's elements with a random uuid; a digest of the frames
    # makes the same animation give the same file.
    ids = set(re.findall(r"_anim_img([0-9a-f]{32})", fragment))
    if len(ids) == 1:
        old = ids.pop()
        new = hashlib.sha256(fragment.replace(old, "").encode()).hexdigest()[:32]
        fragment = fragment.replace(old, new)
    return fragment

