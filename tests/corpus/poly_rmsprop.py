# "Learning PyTorch with examples", optim: the polynomial model trained by RMSprop,
# with MSELoss(reduction="sum") and optimizer.zero_grad().
import math

import torch

STEPS = 3
ALL = {"model.0.weight", "model.0.bias"}
TWINS = {"no_zero_grad": ("model.0.bias", ALL)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    for t in range(steps):
        loss = loss_fn(model(xx), y)
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(loss.item())


if __name__ == "__main__":
    main()
