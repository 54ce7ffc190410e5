"""Softmax regression: linear regression's classification sibling (d2l chapter 3).

Three Gaussian blobs in the plane, one class each. The model is still one fully connected
layer, o = X W + b, but with three outputs (one score per class); softmax turns the scores
into probabilities and the cross-entropy against the true class is the loss. Minibatch
SGD, a few epochs, loss and accuracy printed per epoch.

By default the loss is `F.cross_entropy` (softmax, log and negative log-likelihood fused,
numerically stable). `--by-hand` spells the same three steps out, as the chapter does:

    python demos/softmax_regression.py [--by-hand]
    gradtrace run demos/softmax_regression.py

The gradient of the mean cross-entropy with respect to the scores is
(softmax(o) - onehot(y)) / batch_size, which gradtrace's analytic check compares with
what autograd put into W.grad and b.grad.
"""

import argparse

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--by-hand", action="store_true",
                    help="softmax, log and NLL written out instead of F.cross_entropy")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

torch.manual_seed(42)

num_classes = 3
num_per_class = 100
centres = torch.tensor([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])


def make_blobs(centres, n, spread=0.8):
    """n points around each centre; labels are the centre's index (0, 1, 2)."""
    points = [c + spread * torch.randn(n, 2) for c in centres]
    labels = [torch.full((n,), k, dtype=torch.long) for k in range(len(centres))]
    return torch.cat(points), torch.cat(labels)


features, labels = make_blobs(centres, num_per_class)


def data_iter(batch_size, features, labels):
    """Shuffled minibatches (a seeded permutation, so every run is the same)."""
    order = torch.randperm(len(features))
    for i in range(0, len(features), batch_size):
        idx = order[i:i + batch_size]
        yield features[idx], labels[idx]


W = torch.normal(0, 0.01, size=(2, num_classes), requires_grad=True)
b = torch.zeros(num_classes, requires_grad=True)


def net(X):
    return X @ W + b


def softmax(O):
    """Row-wise softmax, written out (the chapter's version; fine for small scores)."""
    O_exp = torch.exp(O)
    return O_exp / O_exp.sum(1, keepdim=True)


def cross_entropy_by_hand(O, y):
    """Mean negative log-probability of the true class."""
    y_hat = softmax(O)
    return -torch.log(y_hat[range(len(y_hat)), y]).mean()


loss = cross_entropy_by_hand if args.by_hand else F.cross_entropy


def accuracy(O, y):
    return (O.argmax(dim=1) == y).float().mean().item()


lr = 0.1
batch_size = 20

for epoch in range(args.epochs):
    for X, y in data_iter(batch_size, features, labels):
        l = loss(net(X), y)
        l.backward()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
            W.grad.zero_()
            b.grad.zero_()
    with torch.no_grad():
        O = net(features)
        print(f'epoch {epoch + 1}, loss {float(loss(O, labels)):.4f}, '
              f'accuracy {accuracy(O, labels):.3f}')
