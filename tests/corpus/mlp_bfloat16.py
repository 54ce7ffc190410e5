# Parameters and data in bfloat16 (model.to(torch.bfloat16)): every op runs in bfloat16.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L1 = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2x": ("net.0.weight", L1), "sign_flip": ("net.0.weight", L1)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(6)
    X = torch.randn(32, 4).to(torch.bfloat16)
    Y = torch.randn(32, 1).to(torch.bfloat16)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(torch.bfloat16)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(net[2](net[1](bend(net[0](X), twin))), Y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
