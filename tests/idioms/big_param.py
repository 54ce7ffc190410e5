# A two-layer net whose first weight (784 x 64 = 50,176 numbers) is bigger than
# gradtrace's default --max-numel, so only statistics of it are kept.
import torch
from torch import nn

from _save import save_params

torch.manual_seed(7)
X = torch.randn(32, 784)
y = torch.randint(0, 10, (32,))
net = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
for step in range(6):
    loss = nn.functional.cross_entropy(net(X), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("loss", round(loss.item(), 5))
save_params(**dict(net.named_parameters()))
