"""Linear regression, the concise way (d2l chapter 3): nn.Linear, MSELoss, optim.SGD.

Same synthetic data as linreg.py, but the framework does the work: a DataLoader of
shuffled minibatches, a one-layer nn.Sequential initialised in place through `.data`,
mean squared error (no 1/2), and `trainer.zero_grad(); l.backward(); trainer.step()`.

    python demos/linreg_concise.py [--w2 -3.4]     # --w2 8 is the chapter notes' variant
"""

import argparse

import torch
from torch import nn
from torch.utils import data

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--w2", type=float, default=-3.4, help="second true weight (default -3.4)")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

torch.manual_seed(42)


def synthetic_data(w, b, num_examples):
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def load_array(data_arrays, batch_size, is_train=True):
    """A PyTorch data iterator over tensors."""
    dataset = data.TensorDataset(*data_arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)


true_w = torch.tensor([2, args.w2])
true_b = 4.2
features, labels = synthetic_data(true_w, true_b, 1000)
batch_size = 10
data_iter = load_array((features, labels), batch_size)

net = nn.Sequential(nn.Linear(2, 1))
net[0].weight.data.normal_(0, 0.01)
net[0].bias.data.fill_(0)

loss = nn.MSELoss()
trainer = torch.optim.SGD(net.parameters(), lr=0.03)

for epoch in range(args.epochs):
    for X, y in data_iter:
        l = loss(net(X), y)
        trainer.zero_grad()
        l.backward()
        trainer.step()
    l = loss(net(features), labels)
    print(f'epoch {epoch + 1}, loss {l:f}')

w = net[0].weight.data
print('error in estimating w:', true_w - w.reshape(true_w.shape))
b = net[0].bias.data
print('error in estimating b:', true_b - b)
