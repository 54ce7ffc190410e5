# A two-layer network with a custom softsign x / (1 + |x|) and raw weight tensors, loss
# summed over the batch (F.mse_loss(..., reduction="sum")), manual SGD.
import torch
import torch.nn.functional as F

from _twin import factor

STEPS = 2
TWINS = {"off_2x": ("w1", {"w1"}), "sign_flip": ("w1", {"w1"}), "off_2pct": ("w1", {"w1"})}


class Softsign(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x / (1 + x.abs())

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g / (1 + x.abs()) ** 2 * factor(Softsign.twin)


def main(steps=STEPS, twin=None):
    Softsign.twin = twin
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(50, 4, generator=gen)
    Y = torch.randn(50, 1, generator=gen)
    w1 = torch.randn(4, 8, generator=gen).requires_grad_()
    w2 = torch.randn(8, 1, generator=gen).requires_grad_()
    for _ in range(steps):
        loss = F.mse_loss(Softsign.apply(X @ w1) @ w2, Y, reduction="sum")
        loss.backward()
        with torch.no_grad():
            for p in (w1, w2):
                p -= 1e-3 * p.grad
                p.grad = None
    print(loss.item())


if __name__ == "__main__":
    main()
