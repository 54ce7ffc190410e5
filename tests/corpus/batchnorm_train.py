# nn.BatchNorm1d in training mode after a Linear: the batch mean removes the Linear's bias,
# so its true gradient is exactly 0 (rounding noise in float32, which is correct).
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L0 = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2x": ("net.0.weight", L0),
         "no_zero_grad": ("net.1.weight", L0 | {"net.1.weight", "net.1.bias", "net.3.weight",
                                                 "net.3.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(12)
    X = torch.randn(32, 5)
    y = torch.randn(32, 1)
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        h = bend(net[0](X), twin)
        loss = F.mse_loss(net[3](net[2](net[1](h))), y)
        loss.backward()
        opt.step()
    print(loss.item(), net[1].running_mean.norm().item())


if __name__ == "__main__":
    main()
