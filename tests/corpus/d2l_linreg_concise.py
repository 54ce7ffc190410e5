# d2l 3.3 "concise linear regression": nn.Sequential(nn.Linear(2, 1)), weights set through
# .data, nn.MSELoss() and torch.optim.SGD.
import torch
from torch import nn

from _twin import bend

STEPS = 3
ALL = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2pct": ("net.0.weight", ALL), "no_zero_grad": ("net.0.bias", ALL)}


def main(steps=STEPS, twin=None):
    gen = torch.Generator().manual_seed(1)
    features = torch.normal(0, 1, (60, 2), generator=gen)
    labels = features @ torch.tensor([[2.0], [-3.4]]) + 4.2
    net = nn.Sequential(nn.Linear(2, 1))
    net[0].weight.data.normal_(0, 0.01, generator=gen)
    net[0].bias.data.fill_(0)
    loss = nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=0.03)
    for i in range(steps):
        X, y = features[i * 20:(i + 1) * 20], labels[i * 20:(i + 1) * 20]
        l = loss(bend(net(X), twin), y)
        if twin != "no_zero_grad":
            trainer.zero_grad()
        l.backward()
        trainer.step()
    print(f"loss {l.item():f}")


if __name__ == "__main__":
    main()
