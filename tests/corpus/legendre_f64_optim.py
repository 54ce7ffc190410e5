# The Legendre fit again, in float64 and through torch.optim.SGD: a and c have a true
# gradient of exactly 0 (odd symmetry), which float64 resolves to about 1e-13 of its terms.
import math

import torch

from _twin import factor

STEPS = 3
TWINS = {"off_2pct": ("d", {"c", "d"}), "dropped_term": ("d", {"c", "d"}),
         "no_zero_grad": ("b", {"a", "b", "c", "d"})}


class P3(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return 0.5 * (5 * z ** 3 - 3 * z)

    @staticmethod
    def backward(ctx, g):
        z, = ctx.saved_tensors
        if P3.twin == "dropped_term":
            return g * 7.5 * z ** 2
        return g * 1.5 * (5 * z ** 2 - 1) * factor(P3.twin)


def main(steps=STEPS, twin=None):
    P3.twin = twin
    x = torch.linspace(-math.pi, math.pi, 1000, dtype=torch.float64)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(v, dtype=torch.float64, requires_grad=True)
                  for v in (0.0, -1.0, 0.0, 0.3))
    optimizer = torch.optim.SGD([a, b, c, d], lr=1e-5)
    for t in range(steps):
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        loss = ((a + b * P3.apply(c + d * x) - y) ** 2).sum()
        loss.backward()
        optimizer.step()
    print(a.item(), b.item(), c.item(), d.item())


if __name__ == "__main__":
    main()
