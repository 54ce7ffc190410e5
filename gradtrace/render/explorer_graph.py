"""The explorer's graph geometry: one graphviz layout per distinct graph shape.

The DOT text is the one `gradtrace graph` writes (:func:`gradtrace.render.graph_dot.to_dot`,
no legend, no title): the same names, kinds, folds and clusters. graphviz (pygraphviz's
bundled libraries, or the ``dot`` program) places it once; the page draws the boxes, edges
and each step's numbers from the positions given here. Without graphviz, the nodes are placed
on the layers of :func:`gradtrace.analysis.graph.layers` with straight edges.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

from ..analysis.graph import GraphModel, layers
from ..errors import RenderError
from .graph import available_engine
from .graph_dot import to_dot
from .graph_options import GraphOptions

__all__ = ["Geometry", "geometry", "shape_key", "OPTIONS"]

_POINTS_PER_INCH = 72.0
#: The options of the explorer's graph and of the backprop explainer's picture: the graph
#: `gradtrace graph` draws (both views in one), in the light theme, without legend or title.
OPTIONS = GraphOptions(view="both", theme="light", legend=False, title=False)


#: A tensor without a name is titled by its id (``t67``), a new one each step: in a shape's
#: key such a title stands for any of its length, and each step says its own (``title``).
_ID_TITLE = re.compile(r"t\d+")


def _title_key(kind: str, title: str) -> object:
    return ("t#", len(title)) if kind == "input" and _ID_TITLE.fullmatch(title or "") else title


def shape_key(model: GraphModel) -> tuple:
    """What makes two steps' graphs the same picture: the nodes (kind, title, detail, shape,
    module, count) in id order and the edges; the values are not part of it, nor which id
    titles an input without a name (:data:`_ID_TITLE`: each step's page data says it)."""
    g = model.graph
    nodes = tuple((a["kind"], _title_key(a["kind"], a["title"]), a["detail"], a["shape"],
                   a["module"], a["count"]) for _, a in sorted(g.nodes(data=True)))
    edges = tuple(sorted((u, v, a["kind"], a["slot"], a["shape"]) for u, v, a in g.edges(data=True)))
    return (model.view, nodes, edges)


@dataclass
class Geometry:
    """Positions in points, y growing downwards: ``width``/``height`` of the picture,
    ``nodes`` (id -> x, y, w, h of the box's top-left corner and size, kind, title, shape,
    detail, module), ``edges`` (kind, SVG path, arrow head points, label and its position),
    ``clusters`` (module boxes) and the ``engine`` that placed them."""

    width: float
    height: float
    nodes: dict[int, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "graphviz"

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height,
                "nodes": {str(k): v for k, v in self.nodes.items()},
                "edges": self.edges, "clusters": self.clusters, "engine": self.engine}


def _node_info(model: GraphModel, n: int) -> dict[str, Any]:
    from ..formatting import shape as fmt_shape

    a = model.graph.nodes[n]
    details = [a["detail"]] if a["detail"] else []
    if a["kind"] == "op" and model.view == "both" and a["note"].startswith("backward: "):
        details.append("⟵ " + a["note"][len("backward: "):])
    return {"kind": a["kind"], "title": a["title"], "shape": fmt_shape(a["shape"]),
            "details": details, "module": a["module"] or ""}


def geometry(model: GraphModel, options: GraphOptions, warn: Callable[[str], None] | None = None) -> Geometry:
    """The layout of ``model`` drawn with ``options`` (graphviz when there is one)."""
    engine = available_engine("auto")
    if engine != "matplotlib":
        try:
            return _graphviz(model, options, engine)
        except RenderError as e:
            if warn:
                warn(f"explorer: graphviz could not lay out a graph ({e}); drawn on layers instead")
    return _layered(model)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def _graphviz(model: GraphModel, options: GraphOptions, engine: str) -> Geometry:
    dot = to_dot(model, options)
    if engine == "dot":
        try:
            r = subprocess.run(["dot", "-Tjson0"], input=dot.encode(), capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RenderError(f"running `dot` failed: {e}") from None
        if r.returncode != 0:
            raise RenderError(r.stderr.decode(errors="replace").strip()[:200])
        return _from_json(model, json.loads(r.stdout))
    import warnings

    import pygraphviz

    from .graph import _quiet_fd2

    try:
        with warnings.catch_warnings(), _quiet_fd2():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = pygraphviz.AGraph(string=dot)
            g.layout(prog="dot")
    except Exception as err:  # pygraphviz raises several types for bad input
        raise RenderError(f"pygraphviz: {err}") from None
    x0, y0, x1, y1 = _floats(g.graph_attr["bb"])
    top = y1

    def pt(x: float, y: float) -> list[float]:
        return [round(x - x0, 2), round(top - y, 2)]

    geo = Geometry(width=round(x1 - x0, 2), height=round(y1 - y0, 2))
    for node in g.nodes():
        name = str(node)
        if not name.startswith("n") or not name[1:].isdigit():
            continue
        n = int(name[1:])
        x, y = _floats(node.attr["pos"])
        w = float(node.attr["width"]) * _POINTS_PER_INCH
        h = float(node.attr["height"]) * _POINTS_PER_INCH
        cx, cy = pt(x, y)
        geo.nodes[n] = {"x": round(cx - w / 2, 2), "y": round(cy - h / 2, 2), "w": round(w, 2),
                        "h": round(h, 2), **_node_info(model, n)}
    for edge in g.edges():
        style = edge.attr.get("style") or ""
        if "invis" in style:
            continue
        tail, head = str(edge[0]), str(edge[1])
        if not (tail[1:].isdigit() and head[1:].isdigit()):
            continue
        path, arrows = _spline(edge.attr.get("pos") or "", pt)
        if not path:
            continue
        item: dict[str, Any] = {"kind": "grad" if "dashed" in style else "data", "path": path,
                                "arrows": arrows, "from": int(tail[1:]), "to": int(head[1:])}
        if edge.attr.get("dir") == "back":
            item["from"], item["to"] = item["to"], item["from"]
        label = (edge.attr.get("label") or "").strip()
        if label and edge.attr.get("lp"):
            item["label"] = label
            item["label_at"] = pt(*_floats(edge.attr["lp"]))
        geo.edges.append(item)

    def clusters(graph) -> None:
        for sub in graph.subgraphs():
            if str(sub.name).startswith("cluster_") and sub.graph_attr.get("bb"):
                bx0, by0, bx1, by1 = _floats(sub.graph_attr["bb"])
                corner = pt(bx0, by1)
                label = str(sub.graph_attr.get("label") or "")
                for tag in ("<B>", "</B>", "<", ">"):
                    label = label.replace(tag, "")
                import html as _html

                geo.clusters.append({"x": corner[0], "y": corner[1], "w": round(bx1 - bx0, 2),
                                     "h": round(by1 - by0, 2), "label": _html.unescape(label)})
            clusters(sub)

    clusters(g)
    return geo


def _from_json(model: GraphModel, doc: dict) -> Geometry:
    """The ``dot -Tjson0`` output read the same way as pygraphviz's attributes."""
    x0, y0, x1, y1 = _floats(doc["bb"])

    def pt(x: float, y: float) -> list[float]:
        return [round(x - x0, 2), round(y1 - y, 2)]

    geo = Geometry(width=round(x1 - x0, 2), height=round(y1 - y0, 2))
    objects = doc.get("objects", [])
    for i, obj in enumerate(objects):
        name = obj.get("name", "")
        if name.startswith("cluster_") and obj.get("bb"):
            bx0, by0, bx1, by1 = _floats(obj["bb"])
            a = pt(bx0, by1)
            label = str(obj.get("label", "")).replace("<B>", "").replace("</B>", "").strip("<>")
            geo.clusters.append({"x": a[0], "y": a[1], "w": round(bx1 - bx0, 2),
                                 "h": round(by1 - by0, 2), "label": html.unescape(label)})
        elif name.startswith("n") and name[1:].isdigit() and "pos" in obj:
            n = int(name[1:])
            x, y = _floats(obj["pos"])
            w, h = float(obj["width"]) * 72, float(obj["height"]) * 72
            cx, cy = pt(x, y)
            geo.nodes[n] = {"x": round(cx - w / 2, 2), "y": round(cy - h / 2, 2), "w": round(w, 2),
                            "h": round(h, 2), **_node_info(model, n)}
    names = {i: o.get("name", "") for i, o in enumerate(objects)}
    for e in doc.get("edges", []):
        if "invis" in (e.get("style") or ""):
            continue
        tail, head = names.get(e["tail"], ""), names.get(e["head"], "")
        path, arrows = _spline(e.get("pos", ""), pt)
        if not path or not tail[1:].isdigit() or not head[1:].isdigit():
            continue
        out: dict[str, Any] = {"kind": "grad" if "dashed" in (e.get("style") or "") else "data",
                               "path": path, "arrows": arrows, "from": int(tail[1:]), "to": int(head[1:])}
        if e.get("dir") == "back":
            out["from"], out["to"] = out["to"], out["from"]
        if (e.get("label") or "").strip() and e.get("lp"):
            out["label"] = e["label"].strip()
            out["label_at"] = pt(*_floats(e["lp"]))
        geo.edges.append(out)
    return geo


def _spline(pos: str, pt) -> tuple[str, list[list[list[float]]]]:
    """graphviz's edge ``pos`` (``e,x,y s,x,y x0,y0 x1,y1 ...``) as an SVG path and the
    arrow heads (each: the tip and the spline end it points from)."""
    start = end = None
    points = []
    for part in pos.split():
        bits = part.split(",")
        if bits[0] in ("e", "s") and len(bits) == 3:
            p = pt(float(bits[1]), float(bits[2]))
            if bits[0] == "e":
                end = p
            else:
                start = p
        elif len(bits) == 2:
            points.append(pt(float(bits[0]), float(bits[1])))
    if len(points) < 2:
        return "", []
    d = f"M{points[0][0]},{points[0][1]}"
    for i in range(1, len(points) - 2, 3):
        a, b, c = points[i], points[i + 1], points[i + 2]
        d += f" C{a[0]},{a[1]} {b[0]},{b[1]} {c[0]},{c[1]}"
    arrows = []
    if end is not None:
        arrows.append([end, points[-1]])
    if start is not None:
        arrows.append([start, points[0]])
    return d, arrows


def _layered(model: GraphModel) -> Geometry:
    """No graphviz: the layers left to right, nodes stacked in each, straight edges."""
    ranks = layers(model)
    geo = Geometry(width=0, height=0, engine="layers")
    w, h, gap_x, gap_y = 150.0, 90.0, 60.0, 24.0
    for r, layer in enumerate(ranks):
        for j, n in enumerate(layer):
            geo.nodes[n] = {"x": r * (w + gap_x) + 10, "y": j * (h + gap_y) + 10, "w": w, "h": h,
                            **_node_info(model, n)}
    geo.width = max((v["x"] + v["w"] for v in geo.nodes.values()), default=0) + 10
    geo.height = max((v["y"] + v["h"] for v in geo.nodes.values()), default=0) + 10
    for u, v, a in model.graph.edges(data=True):
        if u not in geo.nodes or v not in geo.nodes or u == v:
            continue
        p, q = geo.nodes[u], geo.nodes[v]
        x0, y0 = p["x"] + p["w"], p["y"] + p["h"] / 2
        x1, y1 = q["x"], q["y"] + q["h"] / 2
        if x1 < x0:
            x0, x1 = p["x"], q["x"] + q["w"]
        geo.edges.append({"kind": a["kind"], "path": f"M{x0},{y0} L{x1},{y1}",
                          "arrows": [[[x1, y1], [x0, y0]]], "from": u, "to": v})
    return geo
