# Poisson regression with the docs' Exp Function (it saves its result for the backward):
# rate = exp(X w + b), negative log-likelihood rate - y * log(rate), in float64.
import torch

from _twin import factor

STEPS = 3
TWINS = {k: ("w", {"w", "b"}) for k in ("off_2pct", "off_2x", "sign_flip")}


class Exp(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, i):
        result = i.exp()
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        result, = ctx.saved_tensors
        return grad_output * result * factor(Exp.twin)


def main(steps=STEPS, twin=None):
    Exp.twin = twin
    g = torch.Generator().manual_seed(4)
    X = torch.randn(200, 3, generator=g, dtype=torch.float64)
    true_w = torch.tensor([[0.5], [-0.3], [0.2]], dtype=torch.float64)
    y = torch.poisson(torch.exp(X @ true_w + 0.1), generator=g)
    w = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for epoch in range(steps):
        eta = X @ w + b
        nll = (Exp.apply(eta) - y * eta).mean()
        nll.backward()
        with torch.no_grad():
            w -= 0.2 * w.grad
            b -= 0.2 * b.grad
        w.grad = None
        b.grad = None
    print(w.flatten().tolist(), b.item())


if __name__ == "__main__":
    main()
