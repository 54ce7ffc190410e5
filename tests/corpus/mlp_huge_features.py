# Unscaled features of about 1e4 (prices, pixel sums), the first layer's weights scaled
# down to match, as in code that forgot to standardise.
import torch
import torch.nn.functional as F
from torch import nn

from _twin import bend

STEPS = 2
L1 = {"lin1.weight", "lin1.bias"}
TWINS = {"off_2pct": ("lin1.weight", L1), "sign_flip": ("lin1.weight", L1)}


def main(steps=STEPS, twin=None):
    torch.manual_seed(3)
    X = torch.randn(64, 5) * 1e4
    Y = torch.randn(64, 2)
    lin1, lin2 = nn.Linear(5, 16), nn.Linear(16, 2)
    with torch.no_grad():
        lin1.weight /= 1e4
    params = [*lin1.parameters(), *lin2.parameters()]
    for step in range(steps):
        out = lin2(bend(torch.tanh(lin1(X)), twin))
        loss = F.mse_loss(out, Y)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.01 * p.grad
                p.grad = None
    print(loss.item())


if __name__ == "__main__":
    main()
