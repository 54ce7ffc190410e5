# Per-sample losses (F.mse_loss(..., reduction="none")), averaged per row and summed,
# as code that weights samples does; Adam.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L1 = {"l1.weight", "l1.bias"}
TWINS = {"off_2pct": ("l1.weight", L1), "no_zero_grad": ("l2.weight",
                                                        L1 | {"l2.weight", "l2.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(2)
    X = torch.randn(64, 5)
    Y = torch.randn(64, 2)
    l1, l2 = nn.Linear(5, 16), nn.Linear(16, 2)
    opt = torch.optim.Adam([*l1.parameters(), *l2.parameters()], lr=1e-3)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        out = l2(bend(torch.tanh(l1(X)), twin))
        per_sample = F.mse_loss(out, Y, reduction="none").mean(1)
        per_sample.sum().backward()
        opt.step()
    print(per_sample.sum().item())


if __name__ == "__main__":
    main()
