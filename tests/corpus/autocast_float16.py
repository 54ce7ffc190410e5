# torch.autocast("cpu", dtype=torch.float16) around a small classifier; cross-entropy on
# the float32 logits, SGD.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L0 = {"net.0.weight", "net.0.bias"}
TWINS = {"off_2x": ("net.0.weight", L0), "sign_flip": ("net.0.weight", L0)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(9)
    X = torch.randn(48, 6)
    y = torch.randint(0, 3, (48,))
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            logits = net[2](net[1](bend(net[0](X), twin)))
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
