# "Learning PyTorch with examples", nn: the polynomial as nn.Linear(3, 1) on
# x.unsqueeze(-1).pow(p), MSELoss(reduction="sum"), model.zero_grad() and a manual update.
import math

import torch

from _twin import bend

STEPS = 3
ALL = {"model.0.weight", "model.0.bias"}
TWINS = {"off_2pct": ("model.0.weight", ALL), "no_zero_grad": ("model.0.weight", ALL)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    learning_rate = 1e-6
    for t in range(steps):
        y_pred = bend(model(xx), twin)
        loss = loss_fn(y_pred, y)
        if t % 100 == 99:
            print(t, loss.item())
        if twin != "no_zero_grad":
            model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= learning_rate * param.grad
    linear_layer = model[0]
    print(f"Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x + "
          f"{linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3")


if __name__ == "__main__":
    main()
