# An nn.Sequential ReLU network, loss summed over the batch (nn.MSELoss(reduction="sum")),
# SGD with momentum.
import torch
from torch import nn

from _twin import bend

STEPS = 2
L0 = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2x": ("net.0.weight", L0), "sign_flip": ("net.0.bias", L0),
         "no_zero_grad": ("net.2.weight", L0 | {"net.2.weight", "net.2.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(1)
    X = torch.randn(40, 3)
    y = (X ** 2).sum(1, keepdim=True)
    net = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 1))
    crit = nn.MSELoss(reduction="sum")
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        h = bend(net[0](X), twin)
        loss = crit(net[2](net[1](h)), y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
