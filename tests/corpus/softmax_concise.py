# d2l 4.5 "concise softmax regression": nn.Flatten + nn.Linear, nn.CrossEntropyLoss with
# reduction="none" then .mean(), torch.optim.SGD.
import torch
from torch import nn

from _twin import bend

STEPS = 3
ALL = {"net.1.weight", "net.1.bias"}
TWINS = {"off_2pct": ("net.1.weight", ALL), "no_zero_grad": ("net.1.weight", ALL)}


def main(steps=STEPS, twin=None):
    gen = torch.Generator().manual_seed(6)
    images = torch.rand(90, 1, 4, 4, generator=gen)
    labels = (images.flatten(1)[:, :3].argmax(1))
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    nn.init.normal_(net[1].weight, std=0.01, generator=gen)
    loss = nn.CrossEntropyLoss(reduction="none")
    trainer = torch.optim.SGD(net.parameters(), lr=0.1)
    for i in range(steps):
        X, y = images[i * 30:(i + 1) * 30], labels[i * 30:(i + 1) * 30]
        l = loss(bend(net(X), twin), y)
        if twin != "no_zero_grad":
            trainer.zero_grad()
        l.mean().backward()
        trainer.step()
    print(l.mean().item())


if __name__ == "__main__":
    main()
