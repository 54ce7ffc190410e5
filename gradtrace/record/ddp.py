"""DistributedDataParallel's gradient buckets, read as torch exposes them, without a comm hook.

DDP all-reduces gradients in buckets (groups of parameters sent together). A communication
hook would see each bucket, but registering one of gradtrace's would make the script's own
``register_comm_hook`` fail, so the layout is read from what DDP logs about itself,
``DistributedDataParallel._get_ddp_logging_data()`` (a copy of its logging maps: reading it
changes nothing), after each synchronising forward:

- before the buckets are rebuilt, ``bucket_sizes`` (bytes per bucket, the reducer's order)
  is all that is said; the parameters of each bucket are then those of torch's own
  assignment (``torch.distributed._compute_bucket_assignment_by_size`` with the limits DDP
  used), kept only if its sizes are the ones logged (one bucket: every parameter);
- DDP rebuilds the buckets once, in the forward after the first backward pass, in the order
  the gradients became ready; the new layout (``rebuilt_per_bucket_param_indices``,
  ``rebuilt_bucket_sizes``) reaches the logging data one forward later. The step it began
  at is known when it happens (``_has_rebuilt_buckets``); its layout is filled in then.

The layouts go to the trace's meta (``distributed.buckets``) when the run ends: a list of
``{"from_step", "params" (lists of tids, or None when not exposed), "bytes", "rebuilt"}``.
Only the first DDP module a run wraps is followed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Buckets"]


class Buckets:
    """The bucket layouts of the run's DDP module, step by step."""

    def __init__(self, run):
        self.run = run
        self.module_id: int | None = None
        self.layouts: list[dict[str, Any]] = run.ddp_layouts
        self._rebuilt_at: int | None = None
        self._settled = False  # the rebuilt layout is known: nothing can change any more

    def after_forward(self, module) -> None:
        """A synchronising DDP forward has run (its buckets are those its backward uses)."""
        if self._settled:
            return
        if self.module_id is None:
            self.module_id = id(module)
        elif self.module_id != id(module):
            return
        rebuilt = bool(getattr(module, "_has_rebuilt_buckets", False))
        if self.layouts and not rebuilt and not self.layouts[-1]["rebuilt"]:
            return  # the first layout, unchanged until a rebuild
        if rebuilt and self._rebuilt_at is None:
            self._rebuilt_at = self.run.step
        data = module._get_ddp_logging_data()
        if rebuilt:
            entry = self._rebuilt(module, data)
        else:
            entry = self._initial(module, data)
        if self.layouts and self.layouts[-1]["from_step"] == entry["from_step"]:
            self.layouts[-1] = entry  # the layout of a rebuild, told one forward late
        else:
            self.layouts.append(entry)

    def _rebuilt(self, module, data: dict) -> dict[str, Any]:
        step = self._rebuilt_at if self._rebuilt_at is not None else self.run.step
        indices = data.get("rebuilt_per_bucket_param_indices")
        if data.get("has_rebuilt_buckets") != 1 or not isinstance(indices, str):
            return {"from_step": step, "params": None, "bytes": None, "rebuilt": True}
        self._settled = True
        groups = [[int(i) for i in g.split()] for g in indices.split(",") if g.strip()]
        return {"from_step": step, "params": self._tids(module, groups),
                "bytes": _ints(data.get("rebuilt_bucket_sizes")), "rebuilt": True}

    def _initial(self, module, data: dict) -> dict[str, Any]:
        sizes = _ints(data.get("bucket_sizes"))
        params = _reducer_params(module)
        groups: list[list[int]] | None = None
        if sizes is not None and len(sizes) == 1:
            groups = [list(range(len(params)))]
        elif sizes is not None:
            groups = _assignment(module, params)
            if groups is None or [sum(_nbytes(params[i]) for i in g) for g in groups] != sizes:
                groups = None  # not what DDP made: say only the sizes
        return {"from_step": self.run.step, "params": None if groups is None else self._tids(module, groups),
                "bytes": sizes, "rebuilt": False}

    def _tids(self, module, groups: list[list[int]]) -> list[list[int]] | None:
        params = _reducer_params(module)
        if any(not 0 <= i < len(params) for g in groups for i in g):
            return None
        return [[self.run.tid_of(params[i]) for i in g] for g in groups]


def _ints(text: Any) -> list[int] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        return None


def _nbytes(p) -> int:
    return p.numel() * p.element_size()


def _reducer_params(module) -> list:
    """The parameters in the reducer's order, as DDP lists them for it (its
    ``_build_params_for_reducer`` without the buffer bookkeeping that method also does):
    each sub-module's own parameters that require grad and are not ignored, first use only."""
    ignore: set[str] = set(getattr(module, "parameters_to_ignore", ()) or ())
    out, seen = [], set()
    for mname, m in module.module.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if p.requires_grad and f"{mname}.{pname}" not in ignore and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _assignment(module, params: list) -> list[list[int]] | None:
    """torch's own first bucket assignment for these parameters, in the reducer's order."""
    try:
        import torch.distributed as dist

        limits = module._bucket_config.compute_bucket_size_limits(
            static_graph=bool(getattr(module, "static_graph", False)),
            find_unused_parameters=bool(module.find_unused_parameters))[0]
        sparse = [False] * len(params)
        indices, _ = dist._compute_bucket_assignment_by_size(params, limits, sparse)
        return [list(g) for g in reversed(indices)]
    except Exception:  # a torch without these internals: the sizes alone are said
        return None
