# torch.compile around a small model; a few steps only (compilation is slow).
import torch
from torch import nn

from _save import save_params

torch.manual_seed(3)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
cmodel = torch.compile(model, backend="eager")
opt = torch.optim.SGD(model.parameters(), lr=0.1)
X = torch.randn(16, 4)
y = torch.randn(16, 1)
for step in range(3):
    loss = ((cmodel(X) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(step, round(loss.item(), 6))
save_params(**dict(model.named_parameters()))
