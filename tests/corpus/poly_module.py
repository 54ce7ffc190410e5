# "Learning PyTorch with examples", custom nn.Module: Polynomial3 holds a, b, c, d as
# nn.Parameters; criterion MSELoss(reduction="sum"), torch.optim.SGD.
import math

import torch

STEPS = 3
ALL = {"model.a", "model.b", "model.c", "model.d"}
TWINS = {"no_zero_grad": ("model.c", ALL), "unused_param": ("model.e", {"model.e"})}


class Polynomial3(torch.nn.Module):
    def __init__(self, unused=False):
        super().__init__()
        self.a = torch.nn.Parameter(torch.randn(()))
        self.b = torch.nn.Parameter(torch.randn(()))
        self.c = torch.nn.Parameter(torch.randn(()))
        self.d = torch.nn.Parameter(torch.randn(()))
        if unused:
            self.e = torch.nn.Parameter(torch.randn(()))  # unused by the twin

    def forward(self, x):
        return self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3


def main(steps=STEPS, twin=None):
    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    model = Polynomial3(unused=twin == "unused_param")
    criterion = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    for t in range(steps):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the twin's finding names this line
    print(loss.item())


if __name__ == "__main__":
    main()
