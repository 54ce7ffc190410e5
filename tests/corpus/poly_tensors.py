# "Learning PyTorch with examples", tensors and autograd: a third-order polynomial
# a + b x + c x^2 + d x^3 fit to sin(x) with random scalar parameters, updated by hand.
import math

import torch

from _twin import bend

STEPS = 3
ALL = {"a", "b", "c", "d"}
TWINS = {"off_2x": ("d", ALL), "sign_flip": ("b", ALL), "no_zero_grad": ("a", ALL)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(0)
    dtype = torch.float
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
    y = torch.sin(x)
    a = torch.randn((), dtype=dtype, requires_grad=True)
    b = torch.randn((), dtype=dtype, requires_grad=True)
    c = torch.randn((), dtype=dtype, requires_grad=True)
    d = torch.randn((), dtype=dtype, requires_grad=True)
    learning_rate = 1e-6
    for t in range(steps):
        y_pred = bend(a + b * x + c * x ** 2 + d * x ** 3, twin)
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            if twin != "no_zero_grad":
                a.grad = None
                b.grad = None
                c.grad = None
                d.grad = None
    print(f"Result: y = {a.item()} + {b.item()} x + {c.item()} x^2 + {d.item()} x^3")


if __name__ == "__main__":
    main()
