# The smallest model there is: one parameter with two numbers, y = p0 * x + p1.
import torch

from _save import save_params

x = torch.linspace(-1, 1, 21)
y = 0.8 * x - 0.3
p = torch.zeros(2, requires_grad=True)
for step in range(25):
    loss = ((p[0] * x + p[1] - y) ** 2).mean()
    loss.backward()
    with torch.no_grad():
        p -= 0.2 * p.grad
    p.grad = None
print("p", [round(v, 4) for v in p.tolist()])
save_params(p=p)
