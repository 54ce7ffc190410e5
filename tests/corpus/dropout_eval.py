# The same kind of network with nn.Dropout, trained a step and then fine-tuned with
# net.eval() (dropout off): the numeric check replays the eval steps.
import torch
from torch import nn

from _twin import bend

STEPS = 2
L0 = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2x": ("net.0.weight", L0), "sign_flip": ("net.0.bias", L0)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(16)
    X = torch.randn(32, 6)
    y = torch.randint(0, 2, (32,))
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    net.eval()
    trainer = torch.optim.SGD(net.parameters(), lr=0.1)
    for epoch in range(steps):
        trainer.zero_grad()
        h = bend(net[0](X), twin)
        l = nn.functional.cross_entropy(net[3](net[2](net[1](h))), y)
        l.backward()
        trainer.step()
    print(l.item())


if __name__ == "__main__":
    main()
