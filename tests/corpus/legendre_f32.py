# The PyTorch tutorial on new autograd Functions: y = a + b * P3(c + d * x) fit to sin(x),
# with P3 the Legendre polynomial as a custom Function. a and c start at 0 and sin is odd,
# so their true gradient is exactly 0 at every step (float32 gives rounding noise).
import math

import torch

from _twin import factor

STEPS = 3
TWINS = {k: ("d", {"c", "d"}) for k in ("off_2pct", "off_2x", "sign_flip", "dropped_term")}


class LegendrePolynomial3(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input ** 3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        if LegendrePolynomial3.twin == "dropped_term":
            return grad_output * 1.5 * 5 * input ** 2          # the "- 1" forgotten
        return grad_output * 1.5 * (5 * input ** 2 - 1) * factor(LegendrePolynomial3.twin)


def main(steps=STEPS, twin=None):
    LegendrePolynomial3.twin = twin
    dtype = torch.float
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
    y = torch.sin(x)
    a = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, dtype=dtype, requires_grad=True)
    learning_rate = 5e-6
    for t in range(steps):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
            print(t, loss.item())
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    print(f"Result: y = {a.item()} + {b.item()} * P3({c.item()} + {d.item()} x)")


if __name__ == "__main__":
    main()
