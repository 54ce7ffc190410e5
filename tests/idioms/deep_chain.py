# One step whose graph is a chain of 50,000 ops (an unrolled recurrence).
import torch

from _save import save_params

a = torch.tensor(0.5, requires_grad=True)
h = torch.tensor(1.0)
for i in range(25_000):
    h = h * 0.9999 + a * 1e-4
loss = h * h
loss.backward()
print("grad", round(a.grad.item(), 6))
save_params(a=a, grad=a.grad)
