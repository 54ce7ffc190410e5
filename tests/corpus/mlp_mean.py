# A two-layer tanh network as an nn.Module, F.mse_loss (mean), torch.optim.SGD.
import torch
import torch.nn as nn
import torch.nn.functional as F

from _twin import bend

STEPS = 2
FC1 = {"net.fc1.weight", "net.fc1.bias"}
ALL = FC1 | {"net.fc2.weight", "net.fc2.bias"}
TWINS = {"off_2pct": ("net.fc1.weight", FC1), "off_2x": ("net.fc1.bias", FC1),
         "sign_flip": ("net.fc1.weight", FC1), "no_zero_grad": ("net.fc2.bias", ALL),
         "unused_param": ("net.aux.weight", {"net.aux.weight", "net.aux.bias"})}


class MLP(nn.Module):
    def __init__(self, twin=None):
        super().__init__()
        self.twin = twin
        self.fc1 = nn.Linear(5, 16)
        self.fc2 = nn.Linear(16, 2)
        if twin == "unused_param":
            self.aux = nn.Linear(16, 2)  # unused by the twin

    def forward(self, x):
        h = bend(torch.tanh(self.fc1(x)), self.twin)
        return self.fc2(h)


def main(steps=STEPS, twin=None):
    torch.manual_seed(0)
    X = torch.randn(64, 5)
    Y = torch.randn(64, 2)
    net = MLP(twin)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        loss = F.mse_loss(net(X), Y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
