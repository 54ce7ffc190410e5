# The whole model in float64 (model.double(), torch.set_default_dtype-free), SGD.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L0 = {"model.0.weight", "model.0.bias"}
TWINS = {"off_2pct": ("model.0.weight", L0), "sign_flip": ("model.0.bias", L0),
         "no_zero_grad": ("model.2.bias", L0 | {"model.2.weight", "model.2.bias"})}


def main(steps=STEPS, twin=None):
    torch.manual_seed(5)
    X = torch.randn(50, 4, dtype=torch.float64)
    Y = torch.sin(X.sum(1, keepdim=True))
    model = nn.Sequential(nn.Linear(4, 12), nn.Sigmoid(), nn.Linear(12, 1)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        if twin != "no_zero_grad":
            opt.zero_grad()
        loss = F.mse_loss(model[2](model[1](bend(model[0](X), twin))), Y)
        loss.backward()
        opt.step()
    print(loss.item())


if __name__ == "__main__":
    main()
