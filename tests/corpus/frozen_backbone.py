# Transfer learning: a frozen backbone (requires_grad_(False)) and a trained head; only the
# head's parameters go to the optimizer. The twin passes the frozen ones too, by mistake.
import torch
from torch import nn

from _twin import bend

STEPS = 2
HEAD = {"head.weight", "head.bias"}
TWINS = {"off_2x": ("head.weight", HEAD), "no_zero_grad": ("head.bias", HEAD),
         "frozen_in_optimizer": ("backbone.0.weight", {"backbone.0.weight", "backbone.0.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(18)
    X = torch.randn(24, 5)
    y = torch.randint(0, 2, (24,))
    backbone = nn.Sequential(nn.Linear(5, 8), nn.Tanh())  # the twin's finding names this line
    backbone.requires_grad_(False)
    head = nn.Linear(8, 2)
    params = list(head.parameters())
    if twin == "frozen_in_optimizer":
        params = list(backbone.parameters()) + params
    opt = torch.optim.SGD(params, lr=0.1)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        loss = nn.functional.cross_entropy(bend(head(backbone(X)), twin), y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
