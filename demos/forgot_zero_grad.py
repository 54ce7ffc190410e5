"""What goes wrong #1: the from-scratch loop without zeroing the gradients.

The same data and model as linreg.py (y = X w + b + noise, w = [2, -3.4], b = 4.2), but the
update forgets `param.grad.zero_()`. backward() *adds* into .grad, so from the second
minibatch on every step moves the parameters by the sum of all gradients so far instead
of the current one: the loss drops at first, then overshoots and swings instead of settling.

    python demos/forgot_zero_grad.py          # the bug
    python demos/forgot_zero_grad.py --fixed  # the one missing line put back
    gradtrace run demos/forgot_zero_grad.py

What gradtrace shows: at step 0 the gradients of w and b arrive "fresh"; at step 1 they are
"added" on top of step 0's gradient (not "added onto zeros" as in linreg.py) although the
parameters were updated in between. `gradtrace check` reports this as `forgot_zero_grad`
at step 1 (the second step), for w and for b, with this file's backward() line.
"""

import argparse
import random

import torch

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--fixed", action="store_true", help="zero the gradients after each update")
args = parser.parse_args()

torch.manual_seed(42)
random.seed(42)


def synthetic_data(w, b, num_examples):
    X = torch.normal(0, 1, (num_examples, len(w)))
    y = torch.matmul(X, w) + b
    y += torch.normal(0, 0.01, y.shape)
    return X, y.reshape((-1, 1))


def data_iter(batch_size, features, labels):
    indices = list(range(len(features)))
    random.shuffle(indices)
    for i in range(0, len(features), batch_size):
        batch_indices = torch.tensor(indices[i:i + batch_size])
        yield features[batch_indices], labels[batch_indices]


def linreg(X, w, b):
    return torch.matmul(X, w) + b


def squared_loss(y_hat, y):
    return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2


def sgd(params, lr, batch_size):
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            if args.fixed:
                param.grad.zero_()
            # The bug: without the zero_() above, the next backward() adds onto this
            # gradient, and every later update uses the running sum of all gradients.


true_w = torch.tensor([2, -3.4])
true_b = 4.2
features, labels = synthetic_data(true_w, true_b, 1000)

w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
b = torch.zeros(1, requires_grad=True)

lr = 0.03
batch_size = 10
num_epochs = 2

for epoch in range(num_epochs):
    for step, (X, y) in enumerate(data_iter(batch_size, features, labels)):
        l = squared_loss(linreg(X, w, b), y)
        l.sum().backward()
        sgd([w, b], lr, batch_size)
        if epoch == 0 and step % 20 == 0:
            with torch.no_grad():
                print(f'step {step:3d}, minibatch loss {float(l.mean()):.6f}')
    with torch.no_grad():
        train_l = squared_loss(linreg(features, w, b), labels)
        print(f'epoch {epoch + 1}, loss {float(train_l.mean()):f}')

print(f'error in estimating w: {true_w - w.detach().reshape(true_w.shape)}')
print(f'error in estimating b: {true_b - b.detach()}')
