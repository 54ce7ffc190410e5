# A bias-free linear model (nn.Linear(..., bias=False)) fit with Adam.
import torch
from torch import nn

from _save import save_params

torch.manual_seed(6)
X = torch.randn(80, 3)
y = X @ torch.tensor([[1.0], [2.0], [-1.0]])
net = nn.Linear(3, 1, bias=False)
opt = torch.optim.Adam(net.parameters(), lr=0.05)
for step in range(30):
    loss = nn.functional.mse_loss(net(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("loss", round(loss.item(), 6))
save_params(weight=net.weight)
