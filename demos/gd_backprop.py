"""Gradient descent and back-propagation by hand, full batch, with a plot.

y = 3x + 0.8 on 50 random points; scalar parameters w and b; the loss is the mean squared
error. Before each backward() the old gradients are zeroed through `.grad.data`, and the
update goes through `.data -=` (no no_grad block): the idioms of many early PyTorch tutorials.
At the end the fitted line is drawn over the data (under gradtrace the figure is saved).
"""

import matplotlib.pyplot as plt
import torch

torch.manual_seed(42)
learning_rate = 0.01

x = torch.rand([50])
y = 3 * x + 0.8

w = torch.rand(1, requires_grad=True)
b = torch.rand(1, requires_grad=True)


def loss_fn(y, y_predict):
    return (y_predict - y).pow(2).mean()


for i in range(3000):
    y_predict = x * w + b
    loss = loss_fn(y, y_predict)
    if w.grad is not None:
        w.grad.data.zero_()
    if b.grad is not None:
        b.grad.data.zero_()
    loss.backward()
    w.data -= learning_rate * w.grad.data
    b.data -= learning_rate * b.grad.data
    if i % 500 == 0:
        print(f'step {i}: w={w.item():.4f} b={b.item():.4f} loss={loss.item():.6f}')

print(f'final: w={w.item():.4f} b={b.item():.4f} loss={loss.item():.6f}')
plt.figure(figsize=(6, 4))
plt.scatter(x.numpy(), y.numpy(), s=12, label='data')
predict = x * w + b
plt.plot(x.numpy(), predict.detach().numpy(), color='r', label='fit')
plt.legend()
plt.title('y = 3x + 0.8, fitted by gradient descent')
plt.show()
