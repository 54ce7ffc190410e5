# Per-sample gradients with torch.func (vmap over grad), then a manual step.
import torch
from torch.func import functional_call, grad, vmap

from _save import save_params

torch.manual_seed(2)
model = torch.nn.Linear(3, 1)
params = {k: v.detach() for k, v in model.named_parameters()}
X = torch.randn(32, 3)
y = torch.randn(32, 1)


def loss_one(p, x, t):
    out = functional_call(model, p, (x.unsqueeze(0),))
    return ((out - t.unsqueeze(0)) ** 2).mean()


per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
for step in range(5):
    grads = per_sample(params, X, y)
    params = {k: params[k] - 0.1 * g.mean(0) for k, g in grads.items()}
# an ordinary autograd step afterwards, so the trace has something to show
loss = ((model(X) - y) ** 2).mean()
loss.backward()
print("norms", [round(g.norm().item(), 5) for g in grads.values()])
save_params(**params, grad_w=model.weight.grad)
