"""record.ddp: Buckets, DDP's gradient bucket layouts step by step, read from what DDP logs about itself."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn

from gradtrace.record import ddp
from gradtrace.record.ddp import Buckets


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)      # weight 3 floats (12 bytes), bias 1 (4 bytes)
        self.head = nn.Linear(1, 2)     # weight 2 floats (8 bytes), bias 2 (8 bytes)


class _DDP:
    """What Buckets reads of a DistributedDataParallel module (no process group needed)."""

    def __init__(self, net: nn.Module, bucket_sizes: str, limit: int = 16, ignore=()):
        self.module = net
        self.parameters_to_ignore = set(ignore)
        self.find_unused_parameters = False
        self.static_graph = False
        self._has_rebuilt_buckets = False
        self._limit = limit
        self.logged = {"bucket_sizes": bucket_sizes}
        self._bucket_config = SimpleNamespace(
            compute_bucket_size_limits=lambda static_graph, find_unused_parameters: ([self._limit], None))

    def _get_ddp_logging_data(self) -> dict:
        return dict(self.logged)


def _run():
    """The recorder's run as Buckets sees it: the step, the layouts, a tid per tensor."""
    tids: dict[int, int] = {}
    run = SimpleNamespace(step=0, ddp_layouts=[])
    run.tid_of = lambda p: tids.setdefault(id(p), 100 + len(tids))
    return run


def _order(net):
    """The parameters in the reducer's order: each module's own, in module order."""
    return [net.lin.weight, net.lin.bias, net.head.weight, net.head.bias]


def test_one_first_bucket_holds_every_parameter_in_the_reducers_order():
    net, run = _Net(), _run()
    module = _DDP(net, "32")
    b = Buckets(run)
    b.after_forward(module)
    assert run.ddp_layouts == [{"from_step": 0, "params": [[run.tid_of(p) for p in _order(net)]],
                                "bytes": [32], "rebuilt": False}]
    run.step = 1
    b.after_forward(module)  # unchanged until a rebuild: nothing new
    assert len(run.ddp_layouts) == 1


def test_several_first_buckets_are_torchs_own_assignment_when_the_sizes_agree():
    net, run = _Net(), _run()
    params = _order(net)
    groups, _ = dist._compute_bucket_assignment_by_size(params, [16], [False] * len(params))
    expected = [list(g) for g in reversed(groups)]          # the reducer's bucket order
    sizes = [sum(params[i].numel() * 4 for i in g) for g in expected]
    assert len(expected) > 1
    Buckets(run).after_forward(_DDP(net, ",".join(map(str, sizes))))
    [layout] = run.ddp_layouts
    assert layout["params"] == [[run.tid_of(params[i]) for i in g] for g in expected]
    assert layout["bytes"] == sizes and layout["rebuilt"] is False


def test_sizes_that_are_not_torchs_assignment_are_said_without_the_parameters():
    run = _run()
    Buckets(run).after_forward(_DDP(_Net(), "20,12"))
    assert run.ddp_layouts == [{"from_step": 0, "params": None, "bytes": [20, 12], "rebuilt": False}]


def test_a_rebuild_is_noted_at_its_step_and_its_layout_filled_in_one_forward_later():
    net, run = _Net(), _run()
    module = _DDP(net, "32")
    b = Buckets(run)
    b.after_forward(module)
    run.step = 1
    module._has_rebuilt_buckets = True          # rebuilt in this forward: not logged yet
    b.after_forward(module)
    assert run.ddp_layouts[1] == {"from_step": 1, "params": None, "bytes": None, "rebuilt": True}
    run.step = 2
    module.logged.update(has_rebuilt_buckets=1, rebuilt_per_bucket_param_indices="3 2,1 0",
                         rebuilt_bucket_sizes="16,16")
    b.after_forward(module)
    p = _order(net)
    assert run.ddp_layouts[1:] == [{"from_step": 1, "params": [[run.tid_of(p[3]), run.tid_of(p[2])],
                                                               [run.tid_of(p[1]), run.tid_of(p[0])]],
                                    "bytes": [16, 16], "rebuilt": True}]
    # settled: nothing changes any more
    run.step = 3
    module.logged.update(rebuilt_bucket_sizes="1,2")
    b.after_forward(module)
    assert len(run.ddp_layouts) == 2 and run.ddp_layouts[1]["bytes"] == [16, 16]


def test_rebuilt_indices_outside_the_parameters_leave_the_parameters_unknown():
    run = _run()
    module = _DDP(_Net(), "32")
    module._has_rebuilt_buckets = True
    module.logged.update(has_rebuilt_buckets=1, rebuilt_per_bucket_param_indices="0,7",
                         rebuilt_bucket_sizes="12,4")
    Buckets(run).after_forward(module)
    assert run.ddp_layouts == [{"from_step": 0, "params": None, "bytes": [12, 4], "rebuilt": True}]


def test_only_the_first_ddp_module_is_followed():
    run = _run()
    b = Buckets(run)
    b.after_forward(_DDP(_Net(), "32"))
    other = _DDP(_Net(), "8")
    other._has_rebuilt_buckets = True
    run.step = 1
    b.after_forward(other)
    assert [layout["bytes"] for layout in run.ddp_layouts] == [[32]]


def test_the_reducers_parameters_skip_frozen_ignored_and_repeated_ones():
    net = _Net()
    net.head.bias.requires_grad_(False)
    net.tied = nn.Linear(3, 1)
    net.tied.weight = net.lin.weight     # a parameter shared by two modules: its first use
    module = _DDP(net, "", ignore={"head.weight"})
    assert ddp._reducer_params(module) == [net.lin.weight, net.lin.bias, net.tied.bias]


def test_without_torchs_internals_the_assignment_is_not_guessed():
    module = _DDP(_Net(), "20,12")
    del module._bucket_config
    assert ddp._assignment(module, ddp._reducer_params(module)) is None


def test_logged_sizes_are_read_as_whole_numbers_or_not_at_all():
    assert ddp._ints("4,8,12") == [4, 8, 12]
    assert ddp._ints("4, 8") == [4, 8]
    for text in ("", "  ", None, 12, "4,x", "4,,8"):
        assert ddp._ints(text) is None, text
    assert ddp._nbytes(torch.zeros(3, dtype=torch.float16)) == 6
