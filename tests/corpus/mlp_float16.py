# A model in float16 (.half()), as on an accelerator without autocast; plain SGD by hand.
import torch
from torch import nn

from _twin import bend

STEPS = 2
L1 = {"lin.weight", "lin.bias"}
TWINS = {"off_2x": ("lin.weight", L1), "sign_flip": ("lin.bias", L1)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(7)
    X = torch.randn(32, 4).half()
    Y = torch.randn(32, 2).half()
    lin = nn.Linear(4, 8).half()
    out = nn.Linear(8, 2).half()
    params = list(lin.parameters()) + list(out.parameters())
    for step in range(steps):
        pred = out(torch.relu(bend(lin(X), twin)))
        loss = ((pred - Y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in params:
                p.sub_(0.05 * p.grad)
                p.grad = None
    print(loss.item())


if __name__ == "__main__":
    main()
