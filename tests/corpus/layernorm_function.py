# A LayerNorm written as a custom Function (float64), with the full backward:
# dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std.
import torch

from _twin import factor

STEPS = 2
TWINS = {"dropped_term": ("W", {"W", "c"}), "off_2pct": ("W", {"W", "c", "gain", "shift"})}


class LayerNormFn(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, x, gain, shift, eps=1e-5):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        std = (var + eps).sqrt()
        xhat = (x - mu) / std
        ctx.save_for_backward(xhat, std, gain)
        return xhat * gain + shift

    @staticmethod
    def backward(ctx, g):
        xhat, std, gain = ctx.saved_tensors
        dxhat = g * gain
        if LayerNormFn.twin == "dropped_term":
            dx = (dxhat - dxhat.mean(-1, keepdim=True)) / std
        else:
            dx = (dxhat - dxhat.mean(-1, keepdim=True)
                  - xhat * (dxhat * xhat).mean(-1, keepdim=True)) / std
        f = factor(LayerNormFn.twin)
        return dx * f, (g * xhat).sum(0) * f, g.sum(0) * f, None


def main(steps=STEPS, twin=None):
    LayerNormFn.twin = twin
    torch.manual_seed(2)
    X = torch.randn(30, 4, dtype=torch.float64)
    T = torch.randn(30, 3, dtype=torch.float64)
    W = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    gain = torch.ones(6, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    V = (0.3 * torch.randn(6, 3, dtype=torch.float64)).requires_grad_()
    params = [W, c, gain, shift, V]
    for i in range(steps):
        h = LayerNormFn.apply(X @ W + c, gain, shift)
        loss = ((torch.tanh(h) @ V - T) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.1 * p.grad
                p.grad.zero_()
    print(loss.item())


if __name__ == "__main__":
    main()
