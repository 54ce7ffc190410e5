# An even target, cos(x), on points symmetric about 0, fit by a + b x + c x^2 in float64
# with b starting at 0: the odd term b never gets a gradient other than exactly 0.
import math

import torch

from _twin import bend

STEPS = 3
TWINS = {"off_2x": ("c", {"a", "b", "c"})}


def main(steps=STEPS, twin=None):
    x = torch.linspace(-math.pi, math.pi, 501, dtype=torch.float64)
    y = torch.cos(x)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(-0.1, dtype=torch.float64, requires_grad=True)
    for i in range(steps):
        loss = ((bend(a + b * x + c * x * x, twin) - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in (a, b, c):
                p -= 0.01 * p.grad
                p.grad = None
    print(a.item(), b.item(), c.item())


if __name__ == "__main__":
    main()
