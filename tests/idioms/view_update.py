# Updating parameters through views under no_grad: a flat view, a slice of it,
# and .data tricks, the way hand-written optimisers in lecture notes do it.
import torch

from _save import save_params

torch.manual_seed(1)
X = torch.randn(64, 4)
y = X.sum(dim=1, keepdim=True) * 0.5
w = torch.zeros(4, 1, requires_grad=True)
b = torch.zeros(1, requires_grad=True)
for step in range(15):
    loss = ((X @ w + b - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        flat = w.view(-1)
        flat[1:3] -= 0.1 * w.grad.view(-1)[1:3]   # half of w through a view of a view
        w[0] -= 0.1 * w.grad[0]
        w[3:] -= 0.1 * w.grad[3:]
        b.data -= 0.1 * b.grad.data
    w.grad.zero_()
    b.grad = None
print("loss", round(loss.item(), 6))
save_params(w=w, b=b)
