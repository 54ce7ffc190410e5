"""What a graph node says (its cells of numbers, details, tooltip), independent of how it is
drawn: shared by the DOT text and the matplotlib drawing."""

from __future__ import annotations

from dataclasses import dataclass

from ..analysis.graph import GraphModel
from ..formatting import number as fmt_number
from ..formatting import shape as fmt_shape
from ..formatting import shown_mean
from .graph_options import LEGEND, GraphOptions

__all__ = ["Cell", "Label", "value_rows", "node_label"]


# -- numbers and labels (shared by the DOT and matplotlib routes) ------------------------------
@dataclass(frozen=True)
class Cell:
    """One value block of a node label: a caption (``data``, ``grad``) and rows of text.
    ``matrix`` is True when ``rows`` are a tensor's numbers (aligned in columns)."""

    caption: str
    rows: tuple[tuple[str, ...], ...]
    matrix: bool
    kind: str  # "data" | "grad" | "none"
    alert: str = ""


@dataclass(frozen=True)
class Label:
    title: str
    shape: str
    details: tuple[str, ...]
    cells: tuple[Cell, ...]
    tooltip: str


def value_rows(value, options: GraphOptions) -> tuple[tuple[tuple[str, ...], ...], bool]:
    """(rows, is_matrix): the full numbers of a small tensor, or a summary of a large one."""
    shape = tuple(value.shape)
    data = value.array
    rows_n = shape[0] if len(shape) == 2 else 1
    cols_n = shape[-1] if len(shape) >= 1 else 1
    if (data is not None and len(shape) <= 2 and value.numel <= options.max_values
            and rows_n <= options.max_rows and cols_n <= options.max_cols and value.numel > 0):
        a = abs(data) if data.dtype.kind == "c" else data
        vals = a.reshape(-1).tolist()  # floats, ints or bools, as the tensor holds them
        digits = 4 if len(vals) <= 2 else 3  # fewer digits where many numbers share a node
        texts = [fmt_number(x, digits) for x in vals]
        return tuple(tuple(texts[r * cols_n:(r + 1) * cols_n]) for r in range(rows_n)), True
    st = value.stats
    if st.numel == 0:
        return (("empty",),), False
    if st.min == st.max and not st.nonfinite:
        return ((f"all {fmt_number(st.min)}",),), False
    mean = shown_mean(st)  # float noise next to the spread (a softmax gradient) reads as 0
    return ((f"mean {fmt_number(mean, 3)}",),
            (f"{fmt_number(st.min, 3)} … {fmt_number(st.max, 3)}",)), False


def _alert(value) -> str:
    st = value.stats
    return f"{st.nonfinite} nan/inf" if st.nonfinite else ""


def node_label(attrs: dict, options: GraphOptions, view: str) -> Label:
    """What a node says, independent of how it is drawn."""
    kind = attrs["kind"]
    cells: list[Cell] = []
    if options.values:
        show_grad = view != "forward" and kind in ("param", "op", "loss", "grad_fn", "accumulate",
                                                    "module", "repeat")
        if attrs["data"] is not None and kind not in ("grad_fn", "accumulate"):
            rows, matrix = value_rows(attrs["data"], options)
            cells.append(Cell("data", rows, matrix, "data", _alert(attrs["data"])))
        if kind == "accumulate" and view == "both":
            show_grad = False  # the parameter next to it shows the same gradient
        if show_grad:
            if attrs["grad"] is not None:
                rows, matrix = value_rows(attrs["grad"], options)
                cap = "grad in" if kind == "grad_fn" else "grad"
                cells.append(Cell(cap, rows, matrix, "grad", _alert(attrs["grad"])))
            elif kind in ("param", "op") and cells:
                cells.append(Cell("grad", (("none",),), False, "none"))
    title = attrs["title"]
    details = [attrs["detail"]] if attrs["detail"] else []
    if kind == "op" and view == "both" and attrs["note"].startswith("backward: "):
        details.append("⟵ " + attrs["note"][len("backward: "):])
    return Label(title=title, shape=fmt_shape(attrs["shape"]), details=tuple(details),
                 cells=tuple(cells), tooltip=_tooltip(attrs))


def _tooltip(attrs: dict) -> str:
    lines = []
    src = attrs["source"]
    if src is not None:
        lines.append(f"{src.short}: {src.code.strip()}" if src.code else src.short)
    head = attrs["title"] + (f" {fmt_shape(attrs['shape'])}" if attrs["shape"] is not None else "")
    lines.append(f"{head} [{LEGEND.get(attrs['kind'], attrs['kind'])}]")
    if attrs.get("options"):
        lines.append(f"options: {attrs['options']}")
    if attrs["module"]:
        lines.append(f"module: {attrs['module']}")
    for name in ("data", "grad"):
        v = attrs[name]
        if v is not None and v.numel:
            st = v.stats
            lines.append(f"{name}: norm {fmt_number(st.norm)}, mean {fmt_number(st.mean)}, "
                         f"min {fmt_number(st.min)}, max {fmt_number(st.max)}"
                         + (f", {st.nonfinite} nan/inf" if st.nonfinite else ""))
    if attrs["note"]:
        lines.append(attrs["note"])
    return "\n".join(lines)


def _title(model: GraphModel, options: GraphOptions) -> str:
    if isinstance(options.title, str):
        return options.title
    view = {"forward": "forward", "backward": "backward (grad_fn graph)",
            "both": "forward values and gradients"}[model.view]
    loss = f" · loss {fmt_number(model.loss)}" if model.loss is not None else ""
    return f"step {model.step} · {view}{loss}"


def _node_labels(model: GraphModel, options: GraphOptions) -> dict[int, Label]:
    """Every node's label, made once per drawing (the layout sizes them, the drawing shows them)."""
    return {n: node_label(a, options, model.view) for n, a in model.graph.nodes(data=True)}
