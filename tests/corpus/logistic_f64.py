# Logistic regression in float64 with nn.BCEWithLogitsLoss and Adam.
import torch
from torch import nn

from _twin import bend

STEPS = 3
ALL = {"model.weight", "model.bias"}
TWINS = {"off_2pct": ("model.weight", ALL), "no_zero_grad": ("model.bias", ALL)}


def main(steps=STEPS, twin=None):
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(120, 3, generator=gen, dtype=torch.float64)
    y = ((X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) > 0).double().unsqueeze(1)
    model = nn.Linear(3, 1).double()
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for epoch in range(steps):
        if twin != "no_zero_grad":
            optimizer.zero_grad()
        loss = criterion(bend(model(X), twin), y)
        loss.backward()
        optimizer.step()
    print(loss.item())


if __name__ == "__main__":
    main()
