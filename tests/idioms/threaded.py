# Training inside a worker thread, as GUI and notebook helpers do.
import threading

import torch

from _save import save_params

torch.manual_seed(4)
w = torch.zeros(2, 1, requires_grad=True)
X = torch.randn(50, 2)
y = X @ torch.tensor([[3.0], [-1.0]])
losses = []


def train():
    for step in range(20):
        loss = ((X @ w - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w.sub_(0.1 * w.grad)
            w.grad.zero_()
        losses.append(loss.item())


t = threading.Thread(target=train)
t.start()
t.join()
print("final loss", round(losses[-1], 6))
save_params(w=w)
