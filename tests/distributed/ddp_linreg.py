# Linear regression under DistributedDataParallel (gloo, CPU), one shard of the data per rank.
# argv[1]: "ok" (correct), "perturb" (rank 1 nudges the bias after each update: replicas drift
# apart), "unused" (an extra head that only rank 0 uses; needs find_unused_parameters=True),
# "die" (rank 1 is killed after its 3rd step). The final parameters go to $DDP_PARAMS.<rank>,
# what DDP logs of its gradient buckets to $DDP_PARAMS.<rank>.ddp.json. The buckets hold 4
# bytes: once DDP has rebuilt them, the weight and the bias are all-reduced apart.
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()

torch.manual_seed(0)
true_w, true_b = torch.tensor([[2.0], [-3.4]]), 4.2
X = torch.randn(96, 2)
y = X @ true_w + true_b + 0.01 * torch.randn(96, 1)
Xr, yr = X[rank::world], y[rank::world]     # this rank's shard


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        if mode == "unused":
            self.extra = nn.Linear(2, 1)     # used by rank 0 only

    def forward(self, x):
        out = self.lin(x)
        if mode == "unused" and rank == 0:
            out = out + 0.0 * self.extra(x)
        return out


torch.manual_seed(1)
net = Net()
model = DDP(net, find_unused_parameters=(mode == "unused"), bucket_cap_mb=4.5 / 2**20)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
batch = 8
for step in range(12):
    i = (step * batch) % len(Xr)
    xb, yb = Xr[i:i + batch], yr[i:i + batch]
    loss = nn.functional.mse_loss(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if mode == "perturb" and rank == 1 and step >= 4:
        with torch.no_grad():
            net.lin.bias += 1e-3
    if mode == "die" and rank == 1 and step == 3:
        time.sleep(0.5)  # longer than gradtrace's commit window: the steps so far are kept
        os.kill(os.getpid(), 9)
    if rank == 0:
        print(f"step {step} loss {loss.item():.6f}")

out = os.environ.get("DDP_PARAMS")
if out:
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, f"{out}.{rank}")
    logged = model._get_ddp_logging_data()
    names = {id(p): n for n, p in net.named_parameters()}
    # the reducer's buckets themselves (the parameters of each, in order), as a comm hook sees them
    held = [[names[id(p)] for p in b.parameters()] for b in model.reducer._get_zeros_like_grad_buckets()]
    with open(f"{out}.{rank}.ddp.json", "w") as f:
        json.dump({"names": [n for n, _ in net.named_parameters()], "buckets": held,
                   **{k: logged.get(k) for k in ("bucket_sizes", "has_rebuilt_buckets", "rebuilt_bucket_sizes",
                                                 "rebuilt_per_bucket_param_indices")}}, f)
dist.destroy_process_group()
