# Gradient accumulation on purpose: two micro-batches, each loss divided by 2, backward
# twice, then one optimizer step and zero_grad (not a forgotten zero_grad).
import torch
from torch import nn

STEPS = 4     # backward passes: two optimizer steps
ALL = {"model.weight", "model.bias"}
TWINS = {"no_zero_grad": ("model.weight", ALL, 2)}   # the first added after an update


def main(steps=STEPS, twin=None):
    torch.manual_seed(19)
    X = torch.randn(40, 3)
    y = X @ torch.tensor([[1.0], [2.0], [-1.0]]) + 0.5
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    accum = 2
    if twin != "no_zero_grad":
        opt.zero_grad()
    for i in range(steps):
        xb, yb = X[i % 2 * 20:(i % 2 + 1) * 20], y[i % 2 * 20:(i % 2 + 1) * 20]
        loss = nn.functional.mse_loss(model(xb), yb) / accum
        loss.backward()
        if (i + 1) % accum == 0:
            opt.step()
            if twin != "no_zero_grad":
                opt.zero_grad()
    print(loss.item())


if __name__ == "__main__":
    main()
