"""Crop yields: two outputs at once, from scratch, with unscaled features.

15 regions: temperature (F), rainfall (mm), humidity (%) -> mango and orange yields (tons).
The model is X @ w.t() + b with w of shape (2, 3); the loss is a hand-written MSE. The
features are not normalised, so only a tiny learning rate (1e-6) keeps SGD stable, and
progress is slow and zig-zag: the lesson gradtrace's conditioning check explains.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(42)

inputs = np.array([[73, 67, 43], [91, 88, 64], [87, 134, 58], [102, 43, 37], [69, 96, 70],
                   [74, 66, 43], [91, 87, 65], [88, 134, 59], [101, 44, 37], [68, 96, 71],
                   [73, 66, 44], [92, 87, 64], [87, 135, 57], [103, 43, 36], [68, 97, 70]],
                  dtype='float32')
targets = np.array([[56, 70], [81, 101], [119, 133], [22, 37], [103, 119],
                    [57, 69], [80, 102], [118, 132], [21, 38], [104, 118],
                    [57, 69], [82, 100], [118, 134], [20, 38], [102, 120]],
                   dtype='float32')
inputs = torch.from_numpy(inputs)
targets = torch.from_numpy(targets)

train_ds = TensorDataset(inputs, targets)
train_dl = DataLoader(train_ds, batch_size=3, shuffle=True)

w = torch.randn(2, 3, requires_grad=True)
b = torch.randn(2, requires_grad=True)


def model(x):
    return x @ w.t() + b


def mse(t1, t2):
    diff = t1 - t2
    return torch.sum(diff * diff) / diff.numel()


for epoch in range(50):
    for x, y in train_dl:
        preds = model(x)
        loss = mse(preds, y)
        loss.backward()
        with torch.no_grad():
            w -= w.grad * 1e-6
            b -= b.grad * 1e-6
            w.grad.zero_()
            b.grad.zero_()
    if (epoch + 1) % 10 == 0:
        print(f'epoch {epoch + 1}, loss {mse(model(inputs), targets).item():.4f}')

print('predictions:', model(inputs)[:3].detach())
print('targets:    ', targets[:3])
