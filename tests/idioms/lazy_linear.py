# d2l 1.0 style: the concise chapters build their nets from lazy modules,
# whose parameters have no shape until the first batch goes through.
import torch
from torch import nn

from _save import save_params

torch.manual_seed(0)
X = torch.randn(200, 3)
y = X @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.7

net = nn.Sequential(nn.LazyLinear(1))
opt = torch.optim.SGD(net.parameters(), lr=0.05)
for epoch in range(4):
    for i in range(0, 200, 20):
        loss = nn.functional.mse_loss(net(X[i:i + 20]), y[i:i + 20])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.6f}")
save_params(**dict(net.named_parameters()))
