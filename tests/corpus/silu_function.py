# A hand-written SiLU (x * sigmoid(x)) inside an nn.Module, trained with Adam; its backward
# is the product rule, sigmoid(x) + x * sigmoid(x) * (1 - sigmoid(x)).
import torch
import torch.nn as nn
import torch.nn.functional as F

from _twin import factor

STEPS = 2
FC1 = {"net.fc1.weight", "net.fc1.bias"}
TWINS = {"dropped_term": ("net.fc1.weight", FC1), "off_2pct": ("net.fc1.weight", FC1),
         "sign_flip": ("net.fc1.bias", FC1),
         "no_zero_grad": ("net.fc2.weight", FC1 | {"net.fc2.weight", "net.fc2.bias"}),
         "unused_param": ("net.head.weight", {"net.head.weight", "net.head.bias"})}


class SiLU(torch.autograd.Function):
    twin = None

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        s = torch.sigmoid(x)
        if SiLU.twin == "dropped_term":
            return grad * s                      # the second term of the product rule forgotten
        return grad * (s + x * s * (1 - s)) * factor(SiLU.twin)


class Net(nn.Module):
    def __init__(self, unused=False):
        super().__init__()
        self.fc1 = nn.Linear(5, 12)
        self.fc2 = nn.Linear(12, 1)
        if unused:
            self.head = nn.Linear(12, 1)  # unused by the twin

    def forward(self, x):
        return self.fc2(SiLU.apply(self.fc1(x)))


def main(steps=STEPS, twin=None):
    SiLU.twin = twin
    torch.manual_seed(1)
    net = Net(unused=twin == "unused_param")
    X = torch.randn(48, 5)
    y = X[:, :1] * X[:, 1:2] + 0.1 * torch.randn(48, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        loss = F.mse_loss(net(X), y)
        loss.backward()
        opt.step()
    print(f"loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
