"""The backward pass: its grad_fn nodes, their gradients, and how each ``.grad`` was met.

The graph is walked from the root and a hook is put on each node for the one call (each
closure holds the node's number, never the node); an ``AccumulateGrad`` node's hook sees
the ``.grad`` before it is written: None (fresh), zeros, or an old gradient (added).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import torch

from ..tracefile.rows import BackwardRow, NodeRow
from .calls import grad_fn_of
from .events import Events
from .naming import Naming
from .state import Run, StepState
from .values import Values

__all__ = ["Backward", "BackwardPass", "walk"]

_Tensor = torch.Tensor
# How an accumulation reads in the trace, by its kind (model.ACCUMULATIONS).
_ACC_IDIOMS = {"fresh": "fresh", "zeros": "added onto zeros", "added": "added"}


def walk(roots, limit: int | None = None, known=()):
    """grad_fn nodes reachable from the roots, in a stable topological order; their class
    names; per node, per input of its forward op, the nid the gradient flows on to (None
    for no gradient, or a node left out); and how many nodes were refused at the edge of
    what was taken (those beyond them are never reached: 0 means nothing was left out).

    ``limit``: at most this many nodes not in ``known`` (ids of nodes Python holds already)
    are taken, depth first from the roots: each node taken gets a Python object, and
    torch deletes a long chain of nodes that have one recursively (a deep enough chain
    overflows the C stack)."""
    post: list[Any] = []
    children: dict[int, list] = {}
    seen: set[int] = set()
    budget = -1 if limit is None else limit
    left_out = 0

    def take(node) -> bool:
        nonlocal budget, left_out
        if budget == 0 and id(node) not in known:
            left_out += 1
            return False
        if budget > 0 and id(node) not in known:
            budget -= 1
        return True

    for root in roots:
        if root is None or id(root) in seen:
            continue
        seen.add(id(root))
        if not take(root):
            continue
        kids = children[id(root)] = [n for n, _ in root.next_functions]
        stack = [(root, iter(kids))]
        while stack:
            node, it = stack[-1]
            for nxt in it:
                if nxt is not None and id(nxt) not in seen:
                    seen.add(id(nxt))
                    if not take(nxt):
                        continue
                    kids = children[id(nxt)] = [n for n, _ in nxt.next_functions]
                    stack.append((nxt, iter(kids)))
                    break
            else:
                stack.pop()
                post.append(node)
    nodes = post[::-1]
    index = {id(n): i for i, n in enumerate(nodes)}
    nexts = [[None if c is None else index.get(id(c)) for c in children[id(n)]] for n in nodes]
    return nodes, [type(n).__name__ for n in nodes], nexts, left_out


class Backward:
    """Sees ``backward()`` / ``torch.autograd.backward`` / ``torch.autograd.grad`` calls."""

    def __init__(self, run: Run, step: StepState, naming: Naming, values: Values, events: Events,
                 begin_next_step: Callable[[], None]):
        self.run = run
        self.step = step
        self.naming = naming
        self.values = values
        self.events = events
        self.begin_next_step = begin_next_step

    def on_backward(self, func, args, kwargs):
        """A backward call, recorded: its nodes' hooks on while it runs, its rows written
        after. The user's call runs exactly once whatever gradtrace's own code does: a bug
        of gradtrace's before it leaves the pass unrecorded, one after it leaves rows out,
        and either is said once (``Run.internal``); what the call raises reaches the user."""
        run = self.run
        try:
            bw = self._prepare(func, args, kwargs, sys._getframe(1))
            if bw is not None:
                bw.__enter__()  # the hooks are on for this one call (off again if it fails)
        except Exception as e:
            run.internal(e)
            out = func(*args, **kwargs)
            self._ended()  # unrecorded, but a backward pass all the same: the step ends here
            return out
        if bw is None:
            return func(*args, **kwargs)
        try:
            bw.seq = run.take_seq()
            out = func(*args, **kwargs)
        finally:
            bw.__exit__()
        try:
            with torch._C.DisableTorchFunction(), self.values.shared():
                bw.write(out)
        except Exception as e:
            run.internal(e)
        self._ended()
        return out

    def _ended(self) -> None:
        run = self.run
        run.after_backward = True
        self.step.has_backward = True
        # The step's forward is over: what is made from here on is the next step's.
        self.step.pending.clear()
        run.totals["backward"] += 1

    def _prepare(self, func, args, kwargs, frame) -> "BackwardPass | None":
        """The pass about to run, or None when it runs unrecorded."""
        run = self.run
        if run.after_backward:
            # Two backward passes in a row (gradient accumulation, or autograd.grad): each is a step.
            self.begin_next_step()
            if run.dormant:
                return None
        if not run.recording:
            # Only in sampled recording: the patched torch.autograd entry points count the step.
            return None
        name = getattr(func, "__name__", "backward")
        if name == "grad" and (kwargs.get("is_grads_batched") or (len(args) > 7 and args[7])):
            # torch.autograd.functional's vectorize=True: the pass runs under vmap, on batched
            # tensors that have no values of their own to take (functorch's, not autograd's)
            run.batched_backward += 1
            return None
        if func is _Tensor.backward:
            api, roots = "Tensor.backward", [args[0]]
        else:
            first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
            roots = list(first) if isinstance(first, (list, tuple)) else [first]
            api = "autograd.grad" if name == "grad" else "autograd.backward"
        grad_inputs = []
        if api == "autograd.grad":
            inp = args[1] if len(args) > 1 else kwargs.get("inputs")
            grad_inputs = list(inp) if isinstance(inp, (list, tuple)) else [inp]
        f, _ = self.naming.user_frame(frame)
        sid = self.naming.sid(f)
        root_tids = [run.tid_of(r) for r in roots if isinstance(r, _Tensor)]
        for r, tid in zip(roots, root_tids):
            self.values.want(r, tid)
        return BackwardPass(self, api, roots, root_tids, grad_inputs, sid, f)


def _grad_state(p) -> tuple | None:
    g = p.grad
    return None if g is None else (id(g), g._version)


class BackwardPass:
    """One backward call: its nodes, the hook handles it holds while the call runs (removed on
    exit, whatever happens), what each hook saw, and writing it all as rows."""

    def __init__(self, owner: Backward, api, roots, root_tids, grad_inputs, sid, frame):
        self.owner = owner
        self.api, self.roots, self.root_tids, self.grad_inputs = api, roots, root_tids, grad_inputs
        self.sid, self.frame = sid, frame
        self.seq = -1
        step = owner.step
        # One budget of nodes held from Python per step: the forward's and the walk's new ones.
        limit = max(0, owner.run.config.max_nodes_per_backward - len(step.node_refs))
        self.nodes, self.names, self.nexts, self.left_out = walk(
            [grad_fn_of(r) for r in roots if isinstance(r, _Tensor)], limit, step.node_op)
        self.ran: dict[int, tuple] = {}  # nid -> (order, grad_inputs, grad_outputs, accumulation)
        self.order = 0
        self.handles: list[Any] = []
        # DDP's parameters' .grad before the pass: one DDP fills without a local gradient
        # (find_unused_parameters=True, used on another rank) is told by its change.
        self.grads_before = {pid: _grad_state(p) for pid, p in owner.run.ddp_sync.items()}

    def __enter__(self) -> "BackwardPass":
        run = self.owner.run
        # each leaf gets a column of scalars, in the order the run made them (by tid)
        leaves = [(run.tid_of(n.variable), n.variable) for n, name in zip(self.nodes, self.names)
                  if name == "AccumulateGrad"]
        for tid, leaf in sorted(leaves, key=lambda x: x[0]):
            run.scalars.watch(leaf, tid)
        try:
            for nid, node in enumerate(self.nodes):
                # One hook per node. AccumulateGrad: before it runs (was .grad None?).
                if self.names[nid] == "AccumulateGrad":
                    self.handles.append(node.register_prehook(self._acc_pre_hook(nid)))
                else:
                    self.handles.append(node.register_hook(self._post_hook(nid)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _post_hook(self, nid):
        def hook(grad_inputs, grad_outputs):
            self.ran[nid] = (self.order, grad_inputs, grad_outputs, None)
            self.order += 1

        return hook

    def _acc_pre_hook(self, nid):
        run, values = self.owner.run, self.owner.values

        def hook(grad_outputs):
            try:
                var = self.nodes[nid].variable
                g = var.grad
                if g is None:
                    acc = (True, None, False)
                else:
                    tid = run.tid_of(var)
                    if tid in run.grad_zeroed:
                        zeros = True
                    else:
                        zeros = not bool(torch.any(g)) if g.numel() else True
                    acc = (False, values.before(g, ("grad", tid, "grad")), zeros)
                    if id(var) in self.owner.run.ddp_sync:  # DDP will overwrite .grad: keep it
                        acc = (*acc, g.detach().clone())
                self.ran[nid] = (self.order, (), grad_outputs, acc)
                self.order += 1
            except Exception as e:  # never break the user's backward
                run.internal(e)

        return hook

    def write(self, out) -> None:
        """The backward row, its nodes with their gradients, and an accumulate event per leaf."""
        owner = self.owner
        run, step, values = owner.run, owner.step, owner.values
        w = run.w
        roots, root_tids = self.roots, self.root_tids
        # Forward values first (before an update changes the leaves), then the gradients.
        values.flush()
        root_vid = None
        if len(roots) == 1 and isinstance(roots[0], _Tensor) and roots[0].numel() == 1:
            known = step.fwd_vid.get(root_tids[0])
            root_vid = known[0] if known is not None else values.snap_now(roots[0])
            step.loss = run.loss_of(roots[0])  # one element, any shape (unscaled by a GradScaler)
        snapped: dict[int, int] = {}  # a node's input gradient is the next one's output gradient

        def snap(g):
            if g is None:
                return None
            v = snapped.get(id(g))
            if v is None:
                v = snapped[id(g)] = values.snap_now(g)
            return v

        acc_events = []
        node_op = step.node_op
        names = self.names
        not_run = (None, (), (), None)
        for nid, node in enumerate(self.nodes):
            order, g_in, g_out, acc = self.ran.get(nid, not_run)
            variable = None
            if names[nid] == "AccumulateGrad":
                variable = run.tid_of(node.variable)
            w.add_node(NodeRow(nid, names[nid], node_op.get(id(node)), variable, self.nexts[nid],
                               order, [snap(g) for g in g_out], [snap(g) for g in g_in]))
            if acc is not None and variable is not None:
                fresh, before, zeros = acc[:3]
                g = node.variable.grad
                after = snap(g) if g is not None else None
                if after is not None:
                    step.grad_vid[variable] = (after, id(g), g._version)
                incoming = snap(g_out[0]) if g_out else None
                # Onto a zeroed .grad (grad.zero_() style) is not the forgot-to-zero case.
                kind = "fresh" if fresh else ("zeros" if zeros else "added")
                synced = None
                if id(node.variable) in run.ddp_sync and g_out and g_out[0] is not None:
                    # DDP: autograd wrote this rank's own gradient, the reducer then replaced
                    # .grad by the mean over the ranks: the accumulation ends at the local
                    # gradient, an allreduce event takes it to the synchronised one.
                    local = g_out[0] if len(acc) < 4 else acc[3] + g_out[0]
                    synced, after = after, values.snap_now(local)
                acc_events.append((order, variable, fresh, before, after, incoming, kind, synced))
        step.nodes += len(self.nodes)
        if self.left_out:
            run.truncated_passes += 1
        results = []
        if self.api == "autograd.grad" and isinstance(out, tuple):
            results = [snap(g) if isinstance(g, _Tensor) else None for g in out]
        w.set_backward(BackwardRow(self.seq, self.api, root_tids, root_vid,
                                   [run.tid_of(t) for t in self.grad_inputs if isinstance(t, _Tensor)],
                                   results, self.sid, self.left_out))
        for _, variable, fresh, before, after, incoming, kind, synced in sorted(acc_events):
            owner.events.event("accumulate", variable, _ACC_IDIOMS[kind], before, after, self.frame,
                               None, fresh=fresh, incoming=incoming, accumulation=kind)
            if synced is not None:
                owner.events.event("allreduce", variable, f"all-reduce: mean over {run.ddp_world} ranks",
                                   after, synced, self.frame, "DistributedDataParallel")
        self._unused_synced(snap, {v for _, v, *_ in acc_events})
        run.ddp_sync.clear()  # the next pass synchronises what the next DDP forward says

    def _unused_synced(self, snap, accumulated: set) -> None:
        """An allreduce event, with no local gradient, for each DDP parameter that took no
        part in this rank's backward but whose ``.grad`` DDP wrote (the mean of what the other
        ranks sent, this rank sending zeros: ``find_unused_parameters=True``)."""
        run = self.owner.run
        for pid, p in run.ddp_sync.items():
            tid = run.tid_of(p)
            if tid in accumulated or p.grad is None or _grad_state(p) == self.grads_before.get(pid):
                continue
            g = p.grad
            after = snap(g)
            self.owner.step.grad_vid[tid] = (after, id(g), g._version)
            self.owner.events.event(
                "allreduce", tid, f"all-reduce: mean over {run.ddp_world} ranks (no local "
                "gradient on this rank: it sent zeros)", None, after, self.frame,
                "DistributedDataParallel")
