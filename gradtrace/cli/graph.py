"""`gradtrace graph TRACE`: the computation graph of one step as SVG, PNG, PDF or DOT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..render.graph import ENGINES, THEMES, VIEWS, GraphOptions
from ..errors import UsageError
from ..tracefile.outputs import Outputs, outputs_of
from ..tracefile.ranks import RankedRun, run_path_of
from .common import info, load_trace, shown_path, trace_argument

__all__ = ["graph", "after_run"]

_EXTENSIONS = (".svg", ".png", ".pdf", ".dot", ".gv")


@click.command()
@trace_argument
@click.option("--step", "step_spec", default="first", show_default=True, metavar="N|first|last",
              help="The step to draw: a step number, 'first' or 'last' (the last with a backward pass).")
@click.option("--view", type=click.Choice(VIEWS), default=GraphOptions.view, show_default=True,
              help="forward: data flow; backward: the grad_fn graph; both: forward values with "
                   "the gradient of every node.")
@click.option("--values/--no-values", default=GraphOptions.values, show_default=True,
              help="Show values and gradients on the nodes (full numbers for small tensors).")
@click.option("--theme", type=click.Choice(THEMES), default=GraphOptions.theme, show_default=True,
              help="lecture: large fonts for slides; light; dark.")
@click.option("--legend/--no-legend", default=GraphOptions.legend, show_default=True,
              help="Draw the colour legend.")
@click.option("--budget", type=click.IntRange(min=1), default=GraphOptions.budget, show_default=True,
              help="Above this many nodes, repeated sub-graphs and module calls collapse.")
@click.option("--expand", is_flag=True, help="Never collapse: draw every node.")
@click.option("--direction", type=click.Choice(["auto", "TB", "LR"]), default="auto",
              show_default=True, help="Top to bottom, left to right, or whichever fits a slide.")
@click.option("--fold/--no-fold", default=GraphOptions.fold, show_default=True,
              help="Fold a long graph into bands (a snake) when that makes it larger on a "
                   "16:9 slide.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="Layout: the dot program, pygraphviz's bundled graphviz, or matplotlib "
                   "(auto: the first that is available).")
@click.option("--rank", type=click.IntRange(min=0), default=None, metavar="R",
              help="A distributed run (its folder or a rank's file): draw rank R's step "
                   "[default: rank 0, the lowest rank recorded].")
@click.option("-o", "--output", metavar="OUT", default=None,
              help="OUT.svg, .png, .pdf or .dot; '-' prints the DOT text "
                   "[default: graph.svg next to the trace, NAME.graph.svg for NAME.gtrace].")
def graph(trace_path, step_spec, view, values, theme, legend, budget, expand, direction, fold,
          engine, rank, output):
    """Draw the computation graph of one recorded step (SVG, PNG, PDF or DOT).

    Works without the graphviz system package: pygraphviz's wheel brings the graphviz
    libraries, and without either a matplotlib drawing is made.
    """
    if output not in (None, "-") and Path(output).suffix.lower() not in _EXTENSIONS:
        raise UsageError(f"-o {output}: unknown picture type; use .svg, .png, .pdf or .dot "
                         "(or - for DOT on stdout)")
    options = GraphOptions(view=view, values=values, theme=theme, legend=legend, budget=budget,
                           expand=expand, direction=direction, fold=fold, engine=engine)
    trace = load_trace(trace_path)
    whose = ""
    if isinstance(trace, RankedRun):  # a distributed run: one rank's graph, and it says which
        named = run_path_of(Path(trace_path)) if trace_path else None
        r = rank if rank is not None else named[1] if named is not None else trace.ranks[0]
        trace = trace.rank(r)
        whose = f"rank {r} of {trace.info.distributed.get('world_size', '?')}, "
        if rank is None:
            whose = f"rank {r} of {trace.info.distributed.get('world_size', '?')} (--rank R for another), "
    elif rank is not None:
        raise UsageError(f"--rank {rank}: {trace_path} is not a distributed run; drop --rank")
    step = trace.select(step_spec)
    from ..render.graph import graph_of_step

    picture = graph_of_step(step, view=view, options=options)
    if output == "-":
        click.echo(picture.dot, nl=False)
        return
    out = Path(output) if output else _default_output(trace, rank)
    path = picture.save(out)
    model = picture.model
    extra = f", {model.collapsed} collapsed (--expand shows all)" if model.collapsed else ""
    info(f"graph of {whose}step {step.index} ({view} view, {len(model)} nodes{extra}): {shown_path(path)}")


def _default_output(trace, rank: int | None) -> Path:
    """graph.svg as for the trace; a distributed run's is named after the run's path
    (``graph.svg`` beside the rank files), another rank's than rank 0 carries its rank."""
    found = run_path_of(Path(trace.path))
    if found is None:
        return outputs_of(trace.path).graph
    run, r = found
    graph = outputs_of(run).graph
    return graph if rank is None or r == 0 else graph.with_name(f"{graph.stem}.rank{r}{graph.suffix}")


def after_run(trace, outputs: Outputs, ctx, made: dict[str, Any] | None = None) -> None:
    """`gradtrace run` writes graph.svg (the first step, both views in one) next to the trace
    (``outputs`` names it); a ``both`` picture is left in ``made["graphs"]`` for the report."""
    steps = trace.steps
    if not len(steps):
        return
    from ..render.graph import graph_of_step

    step = steps[0]
    view = "both" if step.backward is not None else "forward"
    picture = graph_of_step(step, view=view)
    path = picture.save(outputs.graph)
    if made is not None and view == "both":
        made["graphs"] = {step.index: picture}
    info(f"graph of step {step.index}: {shown_path(path)}")
